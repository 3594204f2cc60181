"""``oryx-ros ask``: one question about images or a video file, answered by the Oryx engine.

Images are read with OpenCV (BGR → RGB). A video is decoded with ``cv2.VideoCapture`` and sampled as the
official video entry points do: ``--frames`` indices ``linspace(0, total-1, N)`` cast to int (spec §2.4).
Without ``--model`` a tiny random checkpoint is used, which exercises the whole pipeline but answers
gibberish; the tool says so loudly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .engine import ANSWER_MODES, Answer, OryxEngine, VisualInput

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


class MediaError(ValueError):
    """An image or video file cannot be read."""


def read_image_rgb(path: str | Path) -> npt.NDArray[np.uint8]:
    """An image file → RGB uint8 ``(H, W, 3)``."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"cannot read image {path} (missing file or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sample_video_rgb(path: str | Path, num_frames: int) -> tuple[list[npt.NDArray[np.uint8]], list[int], int]:
    """Decode ``num_frames`` frames at ``linspace(0, total-1, N)`` → (RGB frames, stamps ns, total frames).

    Frames are decoded sequentially (``grab`` every frame, ``retrieve`` the chosen ones), which is exact
    for every codec, unlike seeking. Short clips give repeated indices, as in the original; a frame is
    then decoded once and repeated. The stamps come from the container (``CAP_PROP_POS_MSEC``).
    """
    import cv2

    from .preprocessing import sample_frame_indices

    if num_frames < 1:
        raise ValueError(f"--frames must be >= 1, got {num_frames}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"cannot open video {path}")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # some containers do not store the count: count by decoding
            total = 0
            while capture.grab():
                total += 1
            capture.release()
            capture = cv2.VideoCapture(str(path))
        if total <= 0:
            raise MediaError(f"video {path} has no frames")
        wanted = sample_frame_indices(total, num_frames)
        wanted_set = set(wanted)
        decoded: dict[int, tuple[npt.NDArray[np.uint8], int]] = {}
        index = 0
        while index <= wanted[-1] and capture.grab():
            if index in wanted_set:
                ok, bgr = capture.retrieve()
                if not ok:
                    raise MediaError(f"cannot decode frame {index} of {path}")
                stamp_ns = round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
                decoded[index] = (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp_ns)
            index += 1
    finally:
        capture.release()
    missing = sorted(wanted_set - set(decoded))
    if missing:
        # The container over-reported its length; use what decodes and say so.
        logger.warning("video %s: frames %s of the reported %d could not be decoded; using %d frames",
                       path, missing, total, len(decoded))
        wanted = [i for i in wanted if i in decoded]
        if not wanted:
            raise MediaError(f"no frame of {path} could be decoded")
    frames = [decoded[i][0] for i in wanted]
    stamps = [decoded[i][1] for i in wanted]
    # Repeated indices share a stamp; the planner needs non-decreasing stamps, which holds.
    return frames, stamps, total


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="oryx-ros ask",
        description="Ask the Oryx model one question about images or a video (no ROS needed).",
    )
    parser.add_argument("question", help="the question, e.g. 'What is on the table?'")
    parser.add_argument("--model", type=Path, default=None,
                        help="Oryx checkpoint directory (default: a tiny RANDOM test model)")
    parser.add_argument("--image", action="append", default=[], type=Path,
                        help="image file; repeat for several images (each is one visual item)")
    parser.add_argument("--video", type=Path, default=None, help="video file (one visual item)")
    parser.add_argument("--frames", type=int, default=32,
                        help="frames sampled from --video with linspace (official default 32; eval 64)")
    parser.add_argument("--mode", choices=ANSWER_MODES, default="auto", help="compression mode (default auto)")
    parser.add_argument("--max-frames", type=int, default=0, help="frame cap per item (0 = automatic)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit in tokens")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="weights dtype (default: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--attn", default="sdpa", help="LLM attention: sdpa, eager or flash_attention_2")
    parser.add_argument("--no-stream", action="store_true", help="print the answer only when complete")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser.parse_args(argv)


def _load_visuals(args: argparse.Namespace) -> list[VisualInput]:
    visuals = []
    for path in args.image:
        visuals.append(VisualInput(frames=[read_image_rgb(path)], label=None))
    if args.video is not None:
        frames, stamps, total = sample_video_rgb(args.video, args.frames)
        print(f"video {args.video}: {total} frames, sampled {len(frames)}", file=sys.stderr)
        visuals.append(VisualInput(frames=frames, stamps_ns=stamps))
    return visuals


def format_report(answer: Answer) -> str:
    """The stats block printed after the answer."""
    t = answer.timings
    lines = [
        f"stop: {answer.stop_reason}   new tokens: {answer.new_tokens}   prompt tokens: {answer.prompt_tokens} "
        f"(visual {answer.visual_tokens})",
        f"mode: {answer.mode_used}   compression: {answer.compression}   frames used/offered: "
        f"{answer.frames_used}/{answer.frames_offered}",
        "timings: " + "  ".join(f"{name} {t[name]:.3f}s" for name in
                               ("preprocess_s", "vision_s", "prefill_s", "decode_s", "total_s")),
    ]
    if answer.new_tokens > 1 and t["decode_s"] > 0:
        lines.append(f"decode: {(answer.new_tokens - 1) / t['decode_s']:.1f} tokens/s")
    dropped = answer.plan.drops_by_reason() if answer.plan is not None else {}
    if dropped:
        lines.append("frames dropped: " + ", ".join(f"{n} ({why})" for why, n in sorted(dropped.items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    import torch

    try:
        visuals = _load_visuals(args)
    except (MediaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_dir = args.model
    if model_dir is None:
        from .tiny_checkpoint import ensure_tiny_checkpoint

        model_dir = ensure_tiny_checkpoint()
        print("!" * 78 + "\n!! No --model given: using a tiny RANDOM-WEIGHT test checkpoint. The answer is\n"
              "!! meaningless; it only shows that the pipeline runs. Pass --model DIR.\n" + "!" * 78,
              file=sys.stderr)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    engine = OryxEngine.from_pretrained(model_dir, device=args.device, dtype=dtype, attn_implementation=args.attn)
    print(f"model: {engine.model_name} on {engine.device}, context {engine.context_limit} tokens", file=sys.stderr)

    def stream(delta: str, _n_tokens: int) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    answer = engine.answer(
        args.question,
        visuals=visuals,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        max_frames=args.max_frames,
        on_token=None if args.no_stream else stream,
    )
    if args.no_stream:
        sys.stdout.write(answer.text)
    sys.stdout.write("\n")
    print(format_report(answer), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
