"""Independent parity check of the model code against a naive reference written from the spec.

:class:`NaiveOryx` below re-implements the official inference path straight from
``docs/oryx-inference-spec.md`` with the simplest possible code and none of ``oryx_ros.model``:

* preprocessing (§2): the resize rule in double precision, PIL's *default* resize filter, the tiny-image
  guard, normalisation as the CLIP processor does it (rescale in float64, cast to float32, then
  ``(x - 0.5) / 0.5`` in float32);
* the ViT (§3) one image at a time: patch embedding as a plain matmul, bilinear position-embedding
  resampling (``align_corners=False``) built from explicit 1-D weights, hand-written LayerNorm, erf GELU
  and per-head attention loops with scale ``head_dim^-0.5``;
* the dynamic compressor (§4) cell by cell (r = 1, 2, 4; scale ``1/sqrt(mid)`` with mid read from the
  checkpoint: 256);
* the projector layout (§5) row by row: begin, lowres rows + newlines, sep, highres rows + newlines, end
  for images; begin, (rows + newlines + sep) per frame, end for videos;
* the prompt ids (§6) of both layouts built piece by piece, with ``<|im_start|>``/``<|im_end|>`` taken
  as the first two additional special tokens, merged with the visual blocks token by token (§7);
* the language model: transformers' own ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` built from
  ``config.json`` (``rope_scaling`` forced to None for Qwen2), the checkpoint tensors loaded directly
  and ``resize_token_embeddings(len(tokenizer))`` as the original builder does; greedy decoding without
  KV cache, with the repetition penalty of ``generation_config.json`` applied on the generated ids only
  and the EOS ids of ``generation_config.json``.

Everything runs in float32 on CPU against tiny random checkpoints, and our ``inputs_embeds``, first-step
logits and greedy ids (through :class:`~oryx_ros.model.engine.OryxEngine`) must agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Final

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.generation import GenerationSettings, generate
from oryx_ros.model.loading import LoadedOryx, load_oryx
from oryx_ros.model.modeling_oryx import ImageInput, VideoInput
from oryx_ros.model.preprocessing import preprocess_image, preprocess_video
from oryx_ros.model.prompting import build_prompt_ids
from oryx_ros.model.tiny_checkpoint import write_tiny_checkpoint

RELATIVE_TOLERANCE: Final = 1e-5  # max |ours - reference| / max |reference|
NEW_TOKENS = 8
QUESTION = "What is in front of the robot?"
SYSTEM = "You are a helpful assistant."
PLACEHOLDER = -200


# ----------------------------------------------------------------------------------------- reference
def _softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _linear_weights(out_len: int, in_len: int) -> torch.Tensor:
    """``(out_len, in_len)`` 1-D bilinear weights, ``align_corners=False``, no antialias."""
    weights = torch.zeros(out_len, in_len, dtype=torch.float64)
    scale = in_len / out_len
    for i in range(out_len):
        src = max(scale * (i + 0.5) - 0.5, 0.0)
        i0 = min(int(src), in_len - 1)
        i1 = min(i0 + 1, in_len - 1)
        frac = src - i0
        weights[i, i0] += 1.0 - frac
        weights[i, i1] += frac
    return weights


def _resize_rule(width: int, height: int, patch: int, base: int, max_res: int, min_res: int) -> tuple[int, int]:
    """Spec §2.2, in Python doubles: product, divide by the patch, truncate."""
    if base == 0:
        if width * height > max_res * max_res:
            scale = math.sqrt(max_res * max_res / (width * height))
        elif width * height < min_res * min_res:
            scale = math.sqrt(min_res * min_res / (width * height))
        else:
            scale = 1.0
    else:
        scale = math.sqrt(base * base / (width * height))
    return int(width * scale / patch) * patch, int(height * scale / patch) * patch


def _normalise(image: Image.Image) -> torch.Tensor:
    """CLIP processor with mean = std = 0.5: rescale in float64, cast to float32, normalise in float32."""
    rescaled = (np.asarray(image, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    normalised = (rescaled - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())


class NaiveOryx:
    """The official inference path, written naively from the spec (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        self.config = json.loads((directory / "config.json").read_text())
        self.generation_config = json.loads((directory / "generation_config.json").read_text())
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        self.weights: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            self.weights.update({k: v.float() for k, v in load_file(directory / shard).items()})
        vit = self.config["oryx_vit_config"]  # the tiny tower's shape (official: 1152 wide, 27 deep, 16 heads)
        self.vit_heads = vit["num_attention_heads"]
        self.vit_depth = vit["num_hidden_layers"]
        self.patch = vit["patch_size"]
        self.eps = vit["layer_norm_eps"]

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), config=Qwen2Config(), use_fast=False,
                                                       local_files_only=True)
        qwen = self.config["model_type"] == "oryx_qwen"
        llm_dict = {k: v for k, v in self.config.items() if k not in ("model_type", "architectures")}
        if qwen:
            llm_dict["rope_scaling"] = None  # as OryxQwenForCausalLM.__init__
        llm_config = (Qwen2Config if qwen else LlamaConfig).from_dict(llm_dict, attn_implementation="sdpa")
        assert llm_config.rope_parameters["rope_theta"] == self.config["rope_theta"]
        self.lm = (Qwen2ForCausalLM if qwen else LlamaForCausalLM)(llm_config)
        llm_prefixes = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
        self.lm.load_state_dict({k: v for k, v in self.weights.items() if k.startswith(llm_prefixes)}, strict=True)
        self.lm.resize_token_embeddings(len(self.tokenizer))  # as the original builder: logits cover real tokens
        self.lm.eval().requires_grad_(False)

    def w(self, name: str) -> torch.Tensor:
        return self.weights[name]

    # -------------------------------------------------------------- prompt (§6)
    def chat_ids(self) -> tuple[int, int]:
        names = getattr(self.tokenizer, "additional_special_tokens", None) or self.tokenizer.extra_special_tokens
        im_start, im_end = self.tokenizer.convert_tokens_to_ids(list(names)[:2])
        return im_start, im_end

    def tok(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def training_layout_ids(self, user_text: str) -> list[int]:
        im_start, im_end = self.chat_ids()
        nl = self.tok("\n")
        ids = [im_start, *self.tok("system"), *nl, *self.tok(SYSTEM), im_end, *nl]
        ids += self.tok("<|im_start|>user") + nl
        texts = user_text.split("<image>")
        for i, text in enumerate(texts):
            ids += self.tok(text)
            if i < len(texts) - 1:
                ids += [PLACEHOLDER, *nl]
        ids += [im_end, *nl]
        ids += self.tok("<|im_start|>assistant") + nl
        return ids

    def chunked_layout_ids(self, user_text: str) -> list[int]:
        prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user_text}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        chunks = [self.tok(chunk) for chunk in prompt.split("<image>")]
        bos = self.tokenizer.bos_token_id
        offset = 1 if chunks[0] and bos is not None and chunks[0][0] == bos else 0
        ids = chunks[0][:offset]
        for i, chunk in enumerate(chunks):
            if i:
                ids.append(PLACEHOLDER)
            ids += chunk[offset:]
        return ids

    # -------------------------------------------------------------- preprocessing (§2)
    def image_views(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = Image.fromarray(rgb).convert("RGB")
        w, h = image.size
        ratio = None
        if w < 32 and h < 32:
            ratio = 64 / min(w, h)
        elif w < 32:
            ratio = 64 / w
        elif h < 32:
            ratio = 64 / h
        if ratio is not None:
            image = image.resize((int(w * ratio), int(h * ratio)))  # PIL's default filter
        highres = image.resize(_resize_rule(*image.size, patch=32, base=0, max_res=1536, min_res=0))
        lowres = highres.resize(_resize_rule(*highres.size, patch=32, base=384, max_res=1536, min_res=0))
        return _normalise(lowres), _normalise(highres)

    def video_frame(self, rgb: np.ndarray, modality: str) -> torch.Tensor:
        image = Image.fromarray(rgb).convert("RGB")
        patch = 64 if modality == "video" else 128
        return _normalise(image.resize(_resize_rule(*image.size, patch=patch, base=0, max_res=480, min_res=288)))

    # -------------------------------------------------------------- ViT (§3), one image at a time
    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        table = self.w("model.vision_tower.vision_tower.pos_embed")[0]  # (S·S, C), row-major grid
        side = math.isqrt(table.shape[0])
        grid = table.reshape(side, side, -1).double()
        out = torch.einsum("ir,jc,rcd->ijd", _linear_weights(gh, side), _linear_weights(gw, side), grid)
        return out.reshape(gh * gw, -1).float()

    def vit(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch
        _, H, W = pixels.shape
        gh, gw = H // p, W // p
        prefix = "model.vision_tower.vision_tower."
        conv = self.w(prefix + "patch_embed.proj.weight")  # (C, 3, p, p)
        C = conv.shape[0]
        patches = pixels.reshape(3, gh, p, gw, p).permute(1, 3, 0, 2, 4).reshape(gh * gw, 3 * p * p)
        x = patches @ conv.reshape(C, -1).T + self.w(prefix + "patch_embed.proj.bias")
        x = x + self.pos_embed(gh, gw)
        head_dim = C // self.vit_heads
        for i in range(self.vit_depth):
            b = f"{prefix}blocks.{i}."
            h = _layer_norm(x, self.w(b + "norm1.weight"), self.w(b + "norm1.bias"), self.eps)
            qkv = h @ self.w(b + "attn.qkv.weight").T + self.w(b + "attn.qkv.bias")  # [q | k | v]
            q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
            heads = []
            for head in range(self.vit_heads):
                cols = slice(head * head_dim, (head + 1) * head_dim)
                probs = _softmax(q[:, cols] @ k[:, cols].T * head_dim**-0.5)
                heads.append(probs @ v[:, cols])
            x = x + torch.cat(heads, dim=1) @ self.w(b + "attn.proj.weight").T + self.w(b + "attn.proj.bias")
            h = _layer_norm(x, self.w(b + "norm2.weight"), self.w(b + "norm2.bias"), self.eps)
            hidden = _gelu(h @ self.w(b + "mlp.fc1.weight").T + self.w(b + "mlp.fc1.bias"))
            x = x + hidden @ self.w(b + "mlp.fc2.weight").T + self.w(b + "mlp.fc2.bias")
        return x, (gh, gw)

    # -------------------------------------------------------------- compressor (§4), cell by cell
    def compress(self, features: torch.Tensor, grid: tuple[int, int], r: int):
        p = "model.vision_resampler.vlm_"
        wq, bq = self.w(p + "query_projector.weight"), self.w(p + "query_projector.bias")
        wk, bk = self.w(p + "key_projector.weight"), self.w(p + "key_projector.bias")
        mid = wq.shape[0]
        gh, gw = grid
        fmap = features.reshape(gh, gw, -1)
        cells = []
        for i in range(gh // r):
            for j in range(gw // r):
                keys_src = torch.stack([fmap[i * r + dy, j * r + dx] for dy in range(r) for dx in range(r)])
                pooled = keys_src.mean(dim=0)
                query = wq @ pooled + bq
                keys = keys_src @ wk.T + bk
                weights = _softmax(torch.nan_to_num(keys @ query / math.sqrt(mid)))
                cells.append(pooled + (weights[:, None] * keys_src).sum(dim=0))
        return torch.stack(cells), (gh // r, gw // r)

    # -------------------------------------------------------------- projector layout (§5)
    def project_rows(self, features: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        p = "model.mm_projector.proj."
        hidden = _gelu(features @ self.w(p + "0.weight").T + self.w(p + "0.bias"))
        projected = hidden @ self.w(p + "2.weight").T + self.w(p + "2.bias")
        gh, gw = grid
        tokens = []
        for row in range(gh):
            tokens += [projected[row * gw + col] for col in range(gw)]
            tokens.append(self.w("model.mm_projector.image_newline"))
        return tokens

    def image_block(self, rgb: np.ndarray) -> list[torch.Tensor]:
        lowres, highres = self.image_views(rgb)
        low, low_grid = self.compress(*self.vit(lowres), r=1)
        high, high_grid = self.compress(*self.vit(highres), r=1)
        return [self.w("model.mm_projector.image_begin"), *self.project_rows(low, low_grid),
                self.w("model.mm_projector.image_sep"), *self.project_rows(high, high_grid),
                self.w("model.mm_projector.image_end")]

    def video_block(self, frames: list[np.ndarray], modality: str) -> list[torch.Tensor]:
        r = 2 if modality == "video" else 4
        tokens = [self.w("model.mm_projector.image_begin")]
        for frame in frames:
            tokens += self.project_rows(*self.compress(*self.vit(self.video_frame(frame, modality)), r=r))
            tokens.append(self.w("model.mm_projector.image_sep"))  # after every frame, the last one too
        tokens.append(self.w("model.mm_projector.image_end"))
        return tokens

    # -------------------------------------------------------------- merge and LLM (§7)
    def inputs_embeds(self, ids: list[int], blocks: list[list[torch.Tensor]]) -> torch.Tensor:
        table = self.lm.get_input_embeddings().weight
        rows: list[torch.Tensor] = []
        remaining = iter(blocks)
        for token in ids:
            rows.extend(next(remaining) if token == PLACEHOLDER else [table[token]])
        assert next(remaining, None) is None, "more visual items than <image> placeholders"
        return torch.stack(rows)

    @torch.no_grad()
    def next_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(1, embeds.shape[0], dtype=torch.long)
        return self.lm(inputs_embeds=embeds[None], attention_mask=mask, logits_to_keep=1).logits[0, -1]

    @torch.no_grad()
    def greedy(self, embeds: torch.Tensor, max_new_tokens: int, penalty: float | None = None) -> list[int]:
        if penalty is None:
            penalty = float(self.generation_config.get("repetition_penalty", 1.0))
        eos = self.generation_config["eos_token_id"]
        eos = {eos} if isinstance(eos, int) else set(eos)
        table = self.lm.get_input_embeddings().weight
        generated: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.next_logits(embeds).clone()
            for token in set(generated):  # embeds-only generate: the penalty sees the generated ids only
                logits[token] = logits[token] * penalty if logits[token] < 0 else logits[token] / penalty
            token = int(torch.argmax(logits))
            if token in eos:
                break
            generated.append(token)
            embeds = torch.cat([embeds, table[token][None]])
        return generated


# ----------------------------------------------------------------------------------------- fixtures
# The tiny checkpoints draw weights with std 0.02, which keeps every activation near zero: GELU is then
# almost linear (erf and tanh forms agree to 1e-7) and softmaxes almost uniform. These weights are scaled
# up so that pre-activations and attention scores are O(1) and such mistakes show in the outputs.
SHARPENED: Final = ("attn.qkv.weight", "mlp.fc1.weight", "mm_projector.proj.0.weight", "_projector.weight",
                    "pos_embed")
SHARPEN_FACTOR: Final = 10.0


def _sharpened_checkpoint(tmp_path_factory, llm: str, seed: int) -> tuple[NaiveOryx, LoadedOryx]:
    directory = write_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{llm}") / "ckpt", seed=seed, llm=llm)
    for shard in sorted(directory.glob("model-*.safetensors")):
        tensors = load_file(shard)
        scaled = {k: (v.float() * SHARPEN_FACTOR).to(v.dtype) if k.endswith(SHARPENED) else v
                  for k, v in tensors.items()}
        save_file(scaled, shard, metadata={"format": "pt"})
    return NaiveOryx(directory), load_oryx(directory, dtype=torch.float32, progress=False)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> tuple[NaiveOryx, LoadedOryx]:
    return _sharpened_checkpoint(tmp_path_factory, "qwen2", seed=0)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[NaiveOryx, LoadedOryx]:
    return _sharpened_checkpoint(tmp_path_factory, "llama", seed=1)


def _rgb(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def _check(reference: NaiveOryx, loaded: LoadedOryx, ids: list[int], ref_blocks, our_items, engine_call,
           prompt_layout: str = "training"):
    """Our inputs_embeds and first-step logits equal the reference's to float rounding; the greedy ids of
    our generation loop and of the engine (which preprocesses and builds the prompt itself) equal its ids."""
    model = loaded.model
    ref_embeds = reference.inputs_embeds(ids, ref_blocks)
    ours = model.prepare_inputs_embeds(ids, our_items)[0]
    assert ours.shape == ref_embeds.shape
    assert _relative(ours, ref_embeds) < RELATIVE_TOLERANCE

    ref_logits = reference.next_logits(ref_embeds)
    with torch.no_grad():
        our_logits = model(inputs_embeds=ours[None], logits_to_keep=1).logits[0, -1]
    assert our_logits.shape == ref_logits.shape == (len(reference.tokenizer),)  # trimmed to len(tokenizer)
    assert _relative(our_logits, ref_logits) < RELATIVE_TOLERANCE

    expected = reference.greedy(ref_embeds, NEW_TOKENS)
    settings = GenerationSettings.from_generation_config(loaded.generation_config, loaded.tokenizer,
                                                         max_new_tokens=NEW_TOKENS)
    assert generate(model, ours[None], loaded.tokenizer, settings).token_ids == expected
    answer = engine_call(OryxEngine(loaded, cache_bytes=0, prompt_layout=prompt_layout))
    assert answer.token_ids == expected
    assert answer.prompt_tokens == ref_embeds.shape[0]


# ----------------------------------------------------------------------------------------- tests
def test_prompt_ids_of_both_layouts_match_the_spec(qwen):
    reference, loaded = qwen
    for user_text in (f"<image>\n{QUESTION}", f"<image> <image>\n{QUESTION}", QUESTION):
        training = reference.training_layout_ids(user_text)
        chunked = reference.chunked_layout_ids(user_text)
        assert build_prompt_ids(loaded.tokenizer, user_text, layout="training") == training
        assert build_prompt_ids(loaded.tokenizer, user_text, layout="chunked") == chunked
    newline = reference.tok("\n")
    assert newline == [198]
    training = reference.training_layout_ids(f"<image>\n{QUESTION}")
    chunked = reference.chunked_layout_ids(f"<image>\n{QUESTION}")
    at = training.index(PLACEHOLDER)
    assert training[at:at + 3] == [PLACEHOLDER, 198, 198]  # the piecewise layout's two newlines
    at = chunked.index(PLACEHOLDER)
    assert chunked[at:at + 2] == [PLACEHOLDER, 198] and chunked[at + 2] != 198
    assert reference.chat_ids() == (151644, 151645)


# 256×144 has the aspect of 1280×720 (lowres 512×256 as in spec §2.2); 20×50 takes the tiny-image guard.
@pytest.mark.parametrize(("width", "height"), [(200, 150), (256, 144), (20, 50)])
def test_one_image(qwen, width, height):
    reference, loaded = qwen
    rgb = _rgb(width, height, seed=width)
    pre = preprocess_image(rgb)
    lowres, highres = reference.image_views(rgb)
    assert torch.equal(pre.lowres, lowres) and torch.equal(pre.highres, highres)
    ids = reference.training_layout_ids(f"<image>\n{QUESTION}")
    _check(reference, loaded, ids, [reference.image_block(rgb)], [ImageInput(pre.lowres, pre.highres)],
           lambda engine: engine.answer(QUESTION, [VisualInput([rgb])], mode="image", max_new_tokens=NEW_TOKENS))


@pytest.mark.parametrize("modality", ["video", "video_long"])
def test_video(qwen, modality):
    reference, loaded = qwen
    assert reference.w("model.vision_resampler.vlm_query_projector.weight").shape[0] == 256  # scale 1/16
    frames = [_rgb(200, 150, seed=10 + t) for t in range(3)]
    pixels = preprocess_video(frames, modality)
    for frame, ours in zip(frames, pixels, strict=True):
        assert torch.equal(ours, reference.video_frame(frame, modality))
    ids = reference.training_layout_ids(f"<image>\n{QUESTION}")

    def ask(engine):
        answer = engine.answer(QUESTION, [VisualInput(frames)], mode=modality, max_new_tokens=NEW_TOKENS)
        assert answer.frames_used == 3 and answer.mode_used == modality
        return answer

    _check(reference, loaded, ids, [reference.video_block(frames, modality)], [VideoInput(pixels, modality)], ask)


def test_two_images_and_text(qwen):
    reference, loaded = qwen
    images = [_rgb(200, 150, seed=20), _rgb(120, 160, seed=21)]
    ids = reference.training_layout_ids(f"<image> <image>\n{QUESTION}")
    items = [ImageInput(pre.lowres, pre.highres) for pre in map(preprocess_image, images)]
    _check(reference, loaded, ids, [reference.image_block(rgb) for rgb in images], items,
           lambda engine: engine.answer(QUESTION, [VisualInput([rgb]) for rgb in images], mode="image",
                                        max_new_tokens=NEW_TOKENS))


def test_text_only(qwen):
    reference, loaded = qwen
    ids = reference.training_layout_ids(QUESTION)
    _check(reference, loaded, ids, [], [], lambda engine: engine.answer(QUESTION, max_new_tokens=NEW_TOKENS))


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`:UserWarning")
def test_repetition_penalty_on_generated_ids_as_transformers_applies_it(llama):
    """Penalty 1.05 on the generated ids only, as HF ``generate(inputs_embeds=…)`` applies it: the naive loop
    equals transformers' own greedy generate, and our engine equals both. Without the penalty this prompt
    repeats itself within three tokens, so the case tells the two apart."""
    reference, loaded = llama
    ids = reference.training_layout_ids(QUESTION)
    embeds = reference.inputs_embeds(ids, [])
    expected = reference.greedy(embeds, NEW_TOKENS)
    assert expected != reference.greedy(embeds, NEW_TOKENS, penalty=1.0)
    config = reference.generation_config
    with torch.no_grad():
        out = reference.lm.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, embeds.shape[0],
                                    dtype=torch.long), max_new_tokens=NEW_TOKENS, do_sample=False,
                                    repetition_penalty=config["repetition_penalty"],
                                    eos_token_id=config["eos_token_id"], pad_token_id=config["pad_token_id"])
    assert [t for t in out[0].tolist() if t not in config["eos_token_id"]] == expected
    _check(reference, loaded, ids, [], [], lambda engine: engine.answer(QUESTION, max_new_tokens=NEW_TOKENS))


def test_llama_flavour_image_video_and_chunked_layout(llama):
    reference, loaded = llama
    rgb = _rgb(200, 150, seed=30)
    pre = preprocess_image(rgb)
    ids = reference.training_layout_ids(f"<image>\n{QUESTION}")
    _check(reference, loaded, ids, [reference.image_block(rgb)], [ImageInput(pre.lowres, pre.highres)],
           lambda engine: engine.answer(QUESTION, [VisualInput([rgb])], mode="image", max_new_tokens=NEW_TOKENS))

    frames = [_rgb(160, 120, seed=31 + t) for t in range(2)]
    chunked = reference.chunked_layout_ids(f"<image>\n{QUESTION}")

    _check(reference, loaded, chunked, [reference.video_block(frames, "video")],
           [VideoInput(preprocess_video(frames, "video"), "video")],
           lambda engine: engine.answer(QUESTION, [VisualInput(frames)], mode="video", max_new_tokens=NEW_TOKENS),
           prompt_layout="chunked")
