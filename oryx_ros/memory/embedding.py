"""Optional semantic search: sentence embeddings from a LOCAL sentence-transformers model directory.

Nothing is downloaded: the directory must hold a transformers model and its tokenizer (``config.json``,
``model.safetensors``, tokenizer files), as sentence-transformers saves them; ``1_Pooling/config.json``
declares the pooling (mean of the token embeddings when it is absent). Vectors are L2-normalised, so a dot
product is the cosine. transformers and torch are imported only when a model is configured.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from oryx_ros.memory.records import MemoryStoreError

# sentence-transformers' pooling flags, in the order it checks them.
_POOLING_MODES = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                  "pooling_mode_lasttoken")


class TextEmbedder(Protocol):
    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """(len(texts), dim) float32, each row L2-normalised."""
        ...


class SentenceEmbedder:
    """Embeds texts with a local sentence-transformers model through transformers' AutoModel (CPU by default)."""

    def __init__(self, model_path: str | Path, *, device: str = "cpu", max_length: int = 256) -> None:
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise MemoryStoreError(
                f"memory.embedding_model_path {path} is not a model directory (no config.json). Give the directory "
                "of a sentence-transformers model you downloaded yourself (e.g. all-MiniLM-L6-v2); nothing is "
                "downloaded at run time. Leave the parameter empty to search by text only.")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.pooling = read_pooling_mode(path)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as error:
            raise MemoryStoreError(f"cannot load the embedding model in {path}: {error}") from error
        self._device = device
        self._max_length = max_length
        self._lock = threading.Lock()  # one forward at a time: the recorder embeds while services query
        self.name = path.name

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_length,
                                    return_tensors="pt").to(self._device)
            hidden = self._model(**batch).last_hidden_state  # (B, T, C)
            pooled = pool(hidden, batch["attention_mask"], self.pooling)  # (B, C)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.cpu().numpy().astype(np.float32)


def read_pooling_mode(path: Path) -> str:
    """The pooling declared in ``1_Pooling/config.json`` ("mean" when there is none)."""
    config_path = path / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return "mean"
    config = json.loads(config_path.read_text())
    declared = [mode for mode in _POOLING_MODES if config.get(mode)]
    if len(declared) != 1:
        raise MemoryStoreError(f"{config_path} must set exactly one of {', '.join(_POOLING_MODES)} (got {declared})")
    return declared[0].removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")


def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """(B, T, C) token embeddings + (B, T) attention mask → (B, C), as sentence-transformers' Pooling."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(1).values
    if mode == "lasttoken":  # right padding: the last attended position of each row
        last = mask.squeeze(-1).sum(1).long() - 1
        return hidden[range(hidden.shape[0]), last]
    raise ValueError(f"unknown pooling mode {mode!r}")
