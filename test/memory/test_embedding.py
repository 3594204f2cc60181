"""Semantic recall with a tiny random BERT saved in sentence-transformers layout (nothing downloaded)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from oryx_ros.memory import MemoryEntry, MemoryStore, MemoryStoreError, RecallQuery
from oryx_ros.memory.embedding import SentenceEmbedder, read_pooling_mode

S = 1_000_000_000
WORDS = ["a", "the", "red", "blue", "green", "chair", "table", "mug", "sofa", "door", "kitchen", "robot", "arm",
         "plant", "box", "walked", "past", "near", "on"]
TEXTS = ["a red chair near the table", "a blue mug on the sofa", "the robot arm walked past a door",
         "a green plant in the kitchen", "a box on the table"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BertModel with a WordPiece vocabulary of WORDS, as sentence-transformers saves one."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-sentence-model")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    # A WordPiece vocabulary given as a mapping (transformers 5 ignores a vocab_file argument here).
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False}))
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    assert (directory / "model.safetensors").is_file()
    return directory


def test_embeddings_are_normalised_and_deterministic(tiny_model_dir: Path) -> None:
    embedder = SentenceEmbedder(tiny_model_dir)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed([TEXTS[2]])[0], vectors[2], atol=1e-5)  # padding does not matter
    similarity = vectors @ vectors.T
    assert np.all(similarity[~np.eye(len(TEXTS), dtype=bool)] < 0.9999)  # words, not [UNK]s, were embedded


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_an_entry_whose_text_equals_the_query_ranks_first(open_store: Callable[..., MemoryStore],
                                                          tiny_model_dir: Path, weight: float) -> None:
    store = open_store(embedding_model_path=tiny_model_dir, embedding_weight=weight)
    ids = store.add_entries([MemoryEntry(i * S, i * S, i * S, ("cam0",), text) for i, text in enumerate(TEXTS)])
    for target in (1, 3):
        moments = store.recall(RecallQuery(TEXTS[target]))
        assert moments[0].entry.id == ids[target]
        if weight == 1.0:  # pure cosine of identical texts
            assert moments[0].score == pytest.approx(1.0, abs=1e-5)
    # Semantic recall still honours the filters.
    assert [m.entry.id for m in store.recall(RecallQuery(TEXTS[1], end_ns=0))] == [ids[0]]


def test_pooling_config_and_missing_model_errors(tmp_path: Path) -> None:
    assert read_pooling_mode(tmp_path) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling_mode(tmp_path) == "cls"
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                    "pooling_mode_mean_tokens": True}))
    with pytest.raises(MemoryStoreError, match="exactly one"):
        read_pooling_mode(tmp_path)
    with pytest.raises(MemoryStoreError, match=r"not a model directory.*nothing is downloaded"):
        SentenceEmbedder(tmp_path / "absent")
