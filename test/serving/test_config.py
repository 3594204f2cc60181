"""config/serve.yaml → ServeConfig: the shipped file equals the defaults, and bad values fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from oryx_ros.serving.config import ServeConfig, ServeConfigError, config_from_dict, load_serve_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_yaml_documents_the_defaults():
    assert load_serve_config(REPO / "config" / "serve.yaml") == ServeConfig()


def test_overrides_and_autoscaling():
    config = ServeConfig().with_overrides({"replicas.max_replicas": 4, "replicas.min_replicas": 2,
                                           "http": {"port": 9000}})
    assert config.autoscaling and config.replicas.max_replicas == 4 and config.http.port == 9000
    assert config_from_dict(config.as_dict()) == config


@pytest.mark.parametrize(("document", "message"), [
    ({"model": {"devcie": "cpu"}}, "model.devcie"),
    ({"modle": {}}, "unknown section"),
    ({"model": {"dtype": "int8"}}, "model.dtype"),
    ({"replicas": {"num_gpus": 1}}, "num_gpus"),
    ({"replicas": {"num_replicas": "2"}}, "replicas.num_replicas must be int"),
    ({"replicas": {"max_replicas": 1, "min_replicas": 2}}, "max_replicas"),
    ({"limits": {"max_images": 0}}, "limits"),
    ({"http": {"port": 70000}}, "http.port"),
    ([1, 2], "mapping"),
])
def test_bad_config_names_the_key(document, message):
    with pytest.raises(ServeConfigError, match=message):
        config_from_dict(document)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ServeConfigError, match="cannot read"):
        load_serve_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ServeConfigError, match="not valid YAML"):
        load_serve_config(bad)
