"""Long-horizon memory (oryx_ros.memory): recall latency at scale, disk per camera-hour, cost per keyframe.

- Recall: a store filled with N synthetic 1 Hz entries (descriptions of 10-20 words drawn Zipf-like from a
  2000-word vocabulary, object labels, 3 cameras, poses wandering a 60 m x 60 m site), then the median and
  95th-percentile latency of typical queries over 25 different instances each. SQLite at 10^5 and 10^6,
  PostgreSQL (a throwaway local server, fsync off) at 10^5. Reported with the ratio to the same query at
  the smallest size of the run (how it scales).
- Disk: 640x480 textured frames (multi-octave noise, shapes, a panning camera, sensor noise: JPEG sizes of
  a real indoor scene, not of a flat colour) encoded JPEG q90 and stored at 1 Hz; file growth per frame
  x 3600 = bytes per camera-hour.
- Cost per keyframe, on the recorder's thread: encode (JPEG q90) and insert (one commit per frame and one
  per 3 cameras), as a share of a 100 ms camera period (10 Hz). And on the camera thread: ``offer()``, for a
  frame the rate limit skips (9 in 10 at 10 Hz cameras, 1 Hz keyframes) and one it queues.

    python bench/bench_memory.py            # about 6 min on 2 cores (10^6 SQLite entries take most of it)
    python bench/bench_memory.py --quick    # 10^4 and 10^5, about 1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from machine import cpu_model

from oryx_ros.memory import KeyframeRecorder, MemoryEntry, MemoryObject, NewKeyframe, Pose, RecallQuery
from oryx_ros.memory.recorder import encode_image
from oryx_ros.memory.sqlite_store import SQLiteMemoryStore
from oryx_ros.memory.store import open_memory_store
from oryx_ros.perception.frames import Frame

S = 1_000_000_000
T0 = 1_700_000_000 * S
CAMERA_PERIOD_S = 0.1  # a 10 Hz camera: the callback budget the per-frame costs are compared with
LABELS = ["chair", "table", "mug", "sofa", "door", "plant", "box", "person", "robot", "shelf", "laptop", "bottle",
          "bag", "lamp", "window", "cart", "trolley", "sign", "bin", "screen"]


def log(message: str) -> None:
    print(f"[bench_memory] {message}", file=sys.stderr, flush=True)


# ---- synthetic data ------------------------------------------------------------------------------
def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(size * 2)}
    return sorted(words)[:size]


def synthetic_entries(count: int, seed: int = 0, batch: int = 5000) -> Iterator[list[MemoryEntry]]:
    """``count`` entries at 1 Hz, in batches (random draws vectorised per batch: generation must not dominate)."""
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(2000, rng))
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    labels = np.array(LABELS)
    position = np.zeros(2)
    for start in range(0, count, batch):
        n = min(count, start + batch) - start
        lengths = rng.integers(10, 21, n)
        drawn = words[rng.choice(len(words), int(lengths.sum()), p=zipf)]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        walk = np.clip(position + np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0), -30, 30)
        position = walk[-1]
        object_counts = rng.integers(0, 4, n)
        object_labels = labels[rng.integers(0, len(labels), (n, 3))]
        object_offsets = rng.normal(0, 2, (n, 3, 2))
        camera_mask = rng.random((n, 3)) < 0.6
        entries = []
        for k in range(n):
            x, y = float(walk[k, 0]), float(walk[k, 1])
            objects = tuple(MemoryObject(str(object_labels[k, j]), x + float(object_offsets[k, j, 0]),
                                         y + float(object_offsets[k, j, 1]), 0.5, "map")
                            for j in range(object_counts[k]))
            cameras = tuple(f"cam{c}" for c in range(3) if camera_mask[k, c]) or ("cam0",)
            stamp = T0 + (start + k) * S
            entries.append(MemoryEntry(stamp, stamp - 5 * S, stamp, cameras,
                                       " ".join(drawn[offsets[k]:offsets[k + 1]]),
                                       Pose(x, y, 0.0, 0.0, 0.0, 0.0, 1.0, "map"), objects))
        yield entries


def textured_world(width: int, height: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """An image with the statistics of a cluttered room: multi-octave noise, hard-edged shapes, fine grain."""
    rng = np.random.default_rng(seed)
    world = np.zeros((height, width, 3), np.float32)
    for octave in range(1, 7):  # 1/f-like texture: coarse colour regions down to fine detail
        cells = 2 ** (octave + 1)
        noise = rng.normal(0, 1, (cells * height // width + 2, cells + 2, 3)).astype(np.float32)
        world += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) * (60.0 / octave)
    world += 128
    for _ in range(60):  # furniture-like shapes with edges
        colour = rng.integers(0, 256, 3).tolist()
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.rectangle(world, (x, y), (x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))), colour, -1)
        else:
            cv2.circle(world, (x, y), int(rng.integers(10, 80)), colour, -1)
    world += rng.normal(0, 6, world.shape).astype(np.float32)  # surface grain
    return np.clip(world, 0, 255).astype(np.uint8)


def camera_frames(count: int, width: int = 640, height: int = 480, seed: int = 0) -> Iterator[npt.NDArray[np.uint8]]:
    """A camera panning across the textured world, with sensor noise (sigma 2) in every frame."""
    world = textured_world(width * 2, height * 2, seed)
    rng = np.random.default_rng(seed + 1)
    for i in range(count):
        x = int((np.sin(i / 17) * 0.5 + 0.5) * width)
        y = int((np.cos(i / 23) * 0.5 + 0.5) * height)
        noise = rng.normal(0, 2, (height, width, 3)).astype(np.int16)
        yield np.clip(world[y:y + height, x:x + width].astype(np.int16) + noise, 0, 255).astype(np.uint8)


# ---- recall ----------------------------------------------------------------------------------------
def query_cases(rng: np.random.Generator, words: list[str], newest_ns: int) -> dict[str, Callable[[], RecallQuery]]:
    mid = words[50:400]  # neither the commonest words nor ones found in a handful of entries

    def text() -> str:
        return " ".join(rng.choice(mid, 3))

    def place() -> tuple[float, float, float]:
        return (float(rng.uniform(-20, 20)), float(rng.uniform(-20, 20)), 0.0)

    return {
        "text, 3 words": lambda: RecallQuery(text()),
        "text, last hour": lambda: RecallQuery(text(), start_ns=newest_ns - 3600 * S),
        "text, one camera": lambda: RecallQuery(text(), cameras=("cam1",)),
        "text, within 5 m": lambda: RecallQuery(text(), position=place(), radius_m=5.0, frame_id="map"),
        "object label": lambda: RecallQuery(str(rng.choice(LABELS))),
        "most recent, no text": lambda: RecallQuery(),
        "most recent within 5 m": lambda: RecallQuery(position=place(), radius_m=5.0, frame_id="map"),
    }


def recall_latencies(store: object, count: int, instances: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(1)
    words = vocabulary(2000, np.random.default_rng(0))
    results = {}
    for name, make in query_cases(rng, words, T0 + (count - 1) * S).items():
        queries = [make() for _ in range(instances)]
        store.recall(queries[0])  # warm the page cache for this shape of query
        times = []
        for query in queries:
            start = time.perf_counter()
            store.recall(query)
            times.append(time.perf_counter() - start)
        results[name] = (statistics.median(times) * 1e3, float(np.percentile(times, 95)) * 1e3)
    return results


def fill(store: object, count: int) -> float:
    """Insert ``count`` entries; entries per second."""
    start = time.perf_counter()
    for batch in synthetic_entries(count):
        store.add_entries(batch)
        log(f"  {batch[-1].stamp_ns // S - T0 // S + 1} / {count} entries")
    return count / (time.perf_counter() - start)


def recall_rows(sizes: list[int], postgres_sizes: list[int], postgres_url: str | None, instances: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as directory:
        for backend, backend_sizes in (("SQLite", sizes), ("PostgreSQL", postgres_sizes if postgres_url else [])):
            for count in backend_sizes:
                log(f"{backend}: filling {count} entries")
                schema_dir = Path(directory) / f"{backend}-{count}"
                url = "" if backend == "SQLite" else postgres_url(f"bench_{count}")
                store = open_memory_store(url, directory=schema_dir, max_bytes=0, max_age_s=0)
                rate = fill(store, count)
                log(f"{backend}: {rate:.0f} entries/s; timing recall")
                disk = store.file_bytes() if isinstance(store, SQLiteMemoryStore) else None
                rows.append({"backend": backend, "entries": count, "insert_per_s": rate, "disk_bytes": disk,
                             "latency_ms": recall_latencies(store, count, instances)})
                store.close()
    return rows


# ---- keyframes ---------------------------------------------------------------------------------------
def keyframe_costs(frames: int) -> dict:
    images = list(camera_frames(frames))
    with tempfile.TemporaryDirectory(prefix="bench-memory-kf-") as directory:
        store = SQLiteMemoryStore(directory, max_bytes=0, max_age_s=0)
        encode_s, insert_s, sizes = [], [], []
        start_bytes = store.file_bytes()
        for i, rgb in enumerate(images):
            start = time.perf_counter()
            data, width, height = encode_image(rgb, 640 * 480, "jpeg", 90)
            encode_s.append(time.perf_counter() - start)
            sizes.append(len(data))
            start = time.perf_counter()
            store.add_keyframes([NewKeyframe("cam0", T0 + i * S, data, width, height, "jpeg",
                                             Pose(0, 0, 0, 0, 0, 0, 1, "map"))])
            insert_s.append(time.perf_counter() - start)
        with store._read() as cursor:  # fold the WAL into the file: what stays on disk
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        disk_per_frame = (store.file_bytes() - start_bytes) / len(images)
        # One commit for three cameras' keyframes of the same instant (how the recorder batches).
        batched_s = []
        for i in range(0, len(images) - 2, 3):
            batch = [NewKeyframe(f"cam{k}", T0 + (10**6 + i) * S, encode_image(images[i + k], 640 * 480, "jpeg", 90)[0],
                                 640, 480, "jpeg") for k in range(3)]
            start = time.perf_counter()
            store.add_keyframes(batch)
            batched_s.append((time.perf_counter() - start) / 3)
        store.close()
    return {"frames": len(images), "jpeg_bytes_mean": statistics.mean(sizes),
            "disk_bytes_per_frame": disk_per_frame, "camera_hour_bytes": disk_per_frame * 3600,
            "encode_ms": statistics.median(encode_s) * 1e3, "insert_ms": statistics.median(insert_s) * 1e3,
            "insert_batched_ms": statistics.median(batched_s) * 1e3}


def offer_costs(repeats: int) -> dict:
    rgb = next(camera_frames(1))
    with tempfile.TemporaryDirectory(prefix="bench-memory-offer-") as directory:
        store = SQLiteMemoryStore(directory, max_bytes=0, max_age_s=0)
        recorder = KeyframeRecorder(store, keyframe_hz=1.0, max_pixels=640 * 480, queue_size=repeats + 10)
        skipped = [Frame("cam0", T0 + 10 * S + i, rgb) for i in range(1, repeats + 1)]  # all in one 1 s slot
        recorder.offer(Frame("cam0", T0 + 10 * S, rgb))
        start = time.perf_counter()
        for frame in skipped:
            recorder.offer(frame)
        skipped_s = (time.perf_counter() - start) / repeats
        # Queued: each in its own slot (a camera per frame, so the writer thread meanwhile encodes them all).
        queued = [Frame(f"cam{i}", T0 + 20 * S, rgb) for i in range(repeats)]
        start = time.perf_counter()
        accepted = sum(recorder.offer(frame) for frame in queued)
        queued_s = (time.perf_counter() - start) / repeats
        recorder.close(timeout_s=120.0)
        store.close()
    return {"skipped_us": skipped_s * 1e6, "queued_us": queued_s * 1e6, "queued": accepted}


# ---- main -----------------------------------------------------------------------------------------
def postgres_factory() -> tuple[Callable[[str], str] | None, object]:
    """A throwaway local server (test/ros/postgres_server.py) when PostgreSQL is installed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "ros"))
    from postgres_server import find_postgres_bin, postgres_server

    if find_postgres_bin() is None:
        log("PostgreSQL not installed (apt-get install postgresql): PostgreSQL rows skipped")
        return None, None
    server_context = postgres_server()
    server = server_context.__enter__()
    return server.create_schema, server_context


def print_markdown(rows: list[dict], keyframes: dict, offer: dict) -> None:
    print(f"Recall latency, ms median (p95); x = vs the same query at {rows[0]['entries']:,} entries "
          f"on the same backend.\n")
    names = list(rows[0]["latency_ms"])
    print("| backend | entries | insert/s | file | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    first = {}
    for row in rows:
        base = first.setdefault(row["backend"], row)
        cells = []
        for name in names:
            median, p95 = row["latency_ms"][name]
            ratio = median / base["latency_ms"][name][0]
            cells.append(f"{median:.2f} ({p95:.2f})" + ("" if row is base else f" {ratio:.1f}x"))
        disk = f"{row['disk_bytes'] / 1e6:.0f} MB" if row["disk_bytes"] else "—"
        print(f"| {row['backend']} | {row['entries']:,} | {row['insert_per_s']:,.0f} | {disk} | " + " | ".join(cells)
              + " |")
    print()
    budget_ms = CAMERA_PERIOD_S * 1e3
    print("| keyframe, 640x480 JPEG q90 (textured) | per frame | share of a 100 ms camera period |")
    print("|---|---|---|")
    print(f"| JPEG size | {keyframes['jpeg_bytes_mean'] / 1e3:.1f} kB | — |")
    print(f"| on disk at 1 Hz, one camera | {keyframes['camera_hour_bytes'] / 1e6:.0f} MB per camera-hour | — |")
    for label, key in (("encode (recorder thread)", "encode_ms"), ("insert, one commit per frame", "insert_ms"),
                       ("insert, one commit per 3 cameras", "insert_batched_ms")):
        print(f"| {label} | {keyframes[key]:.2f} ms | {keyframes[key] / budget_ms:.1%} |")
    total = keyframes["encode_ms"] + keyframes["insert_batched_ms"]
    print(f"| encode + insert (batched) | {total:.2f} ms | {total / budget_ms:.1%} |")
    for label, key in (("offer(), skipped by the rate limit (camera thread)", "skipped_us"),
                       ("offer(), queued (camera thread)", "queued_us")):
        print(f"| {label} | {offer[key]:.1f} µs | {offer[key] / 1e3 / budget_ms:.4%} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 entries (PostgreSQL: 10^4)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--instances", type=int, default=25, help="query instances per case")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    postgres_sizes = [10_000] if args.quick else [100_000]
    log(f"{cpu_model()}; SQLite {__import__('sqlite3').sqlite_version}")
    make_url, server_context = (None, None) if args.no_postgres else postgres_factory()
    try:
        rows = recall_rows(sizes, postgres_sizes, make_url, args.instances)
    finally:
        if server_context is not None:
            server_context.__exit__(None, None, None)
    log("keyframes: encode + insert")
    keyframes = keyframe_costs(60 if args.quick else 240)
    log("offer()")
    offer = offer_costs(2000 if args.quick else 5000)
    if args.json:
        print(json.dumps({"recall": rows, "keyframes": keyframes, "offer": offer}, indent=2))
    else:
        print_markdown(rows, keyframes, offer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
