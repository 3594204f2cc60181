"""The fleet server on a real Ray instance (CPU, tiny checkpoint): OpenAI clients, RemoteEngine parity with the
local engine, the content-keyed cache, concurrency, cancellation, a killed replica, auth and limits.

Ray starts once for the module (two applications side by side: the default one and a strict one with an API key
and small limits). No test asserts a wall-clock duration; every wait has a deadline.
"""

from __future__ import annotations

import base64
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from ray_server import ray_instance, serve_app, wait_until_healthy

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.serving.remote_engine import RemoteEngine, RemoteEngineError, RemoteRequestError

pytestmark = pytest.mark.timeout(300)

API_KEY = "test-key-7f3a"
LONG_ANSWER = 1500  # tokens: seconds of decoding on CPU, so a cancel or a kill lands mid-stream


@pytest.fixture(scope="module")
def ray_port():
    with ray_instance() as port:
        yield port


@pytest.fixture(scope="module")
def server(ray_port):
    with serve_app(ray_port) as url:
        yield url


@pytest.fixture(scope="module")
def strict_server(ray_port):
    overrides = {"limits.max_body_bytes": 300_000, "limits.max_images": 3, "limits.max_image_pixels": 100_000,
                 "model.token_cache_megabytes": 0.0}
    with serve_app(ray_port, api_key=API_KEY, overrides=overrides, name="oryx-strict",
                   route_prefix="/strict") as url:
        yield url


@pytest.fixture(scope="module")
def local_engine():
    return OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu", progress=False)


def camera_frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> list[np.ndarray]:
    """Smooth frames with a moving square and mild noise: compress like camera images, differ per frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(n):
        base = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 40 * t % 256)], axis=-1)
        frame = (base + rng.integers(0, 8, base.shape)).astype(np.uint8)
        frame[100 + 10 * t:180 + 10 * t, 200:280] = (200, 30, 30)
        frames.append(frame)
    return frames


def png_url(frame: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def chat_body(frames: list[np.ndarray], **extra) -> dict:
    content = [{"type": "text", "text": "What do you see?"}]
    content += [{"type": "image_url", "image_url": {"url": png_url(f)}} for f in frames]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 6, **extra}


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=30).json()


def wait_for_record(url: str, request_count: int, deadline_s: float = 60.0) -> list[dict]:
    """The replica's recent requests once at least ``request_count`` have ended."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        recent = health(url)["requests"]["recent"]
        if len(recent) >= request_count:
            return recent
        time.sleep(0.2)
    raise AssertionError(f"fewer than {request_count} requests ended within {deadline_s} s")


# ----------------------------------------------------------------------------------------- OpenAI clients
def test_openai_client_lists_streams_and_completes(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    (model,) = client.models.list().data
    assert model.id == "tiny-oryx-qwen2-seed0"
    assert model.model_extra["oryx"]["context_length"] == 32768

    frame = camera_frames(1)[0]
    messages = chat_body([frame])["messages"]
    completion = client.chat.completions.create(model=model.id, messages=messages, max_tokens=5)
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"
    extension = completion.model_extra["oryx"]
    assert extension["frames_used"] == 1 and extension["compression"] == "1x"

    stream = client.chat.completions.create(model=model.id, messages=messages, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 5
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[0].model_extra["oryx"]["frames_from_cache"] == 1  # same frame as the request before


def test_bad_requests_are_400_with_a_message(server):
    frame = camera_frames(1, 64, 48)[0]
    for url, expected in (("http://example.com/cat.png", "never fetches"), ("/etc/passwd", "never fetches"),
                          ("file:///etc/passwd", "never fetches"), ("data:image/gif;base64,R0lGOD", "image/png")):
        body = chat_body([frame])
        body["messages"][0]["content"][1]["image_url"]["url"] = url
        response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400, url
        assert expected in response.json()["error"]["message"]
    response = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    response = httpx.post(f"{server}/v1/chat/completions", json=chat_body([frame], model="gpt-4o"), timeout=30)
    assert response.status_code == 404


# ----------------------------------------------------------------------------------------- RemoteEngine
CASES = {
    "one image": lambda: [VisualInput(camera_frames(1), keys=["a"])],
    "video of 6": lambda: [VisualInput(camera_frames(6, seed=1), stamps_ns=[i * 200_000_000 for i in range(6)],
                                       label="Camera front")],
    "two cameras": lambda: [VisualInput(camera_frames(4, seed=2), label="Camera front"),
                            VisualInput(camera_frames(3, 320, 240, seed=3), label="Camera left")],
    "multiview": lambda: [VisualInput(camera_frames(2, seed=s), label=f"Camera {s}") for s in range(3)],
    "small frames": lambda: [VisualInput(camera_frames(5, 96, 64, seed=4))],  # upscaled by preprocessing
}
MODES = {"one image": "auto", "video of 6": "auto", "two cameras": "video_long", "multiview": "multiview",
         "small frames": "video"}
# Whether the frames go resized: not when preprocessing would upscale them (cheaper as they are) or resize the
# resized frame again (320x240 at 16x: 256x128, which would become 384x128).
RESIZED = {"one image": True, "video of 6": True, "two cameras": False, "multiview": True, "small frames": False}


@pytest.mark.parametrize("case", list(CASES))
def test_remote_answer_equals_local_answer(server, local_engine, case):
    visuals = CASES[case]()
    kwargs = {"mode": MODES[case], "max_new_tokens": 8, "max_frames": 4 if case == "video of 6" else 0}
    local = local_engine.answer("Where is the red box?", visuals, **kwargs)
    streamed: list[tuple[str, int]] = []
    with RemoteEngine(server) as remote:
        answer = remote.answer("Where is the red box?", visuals, on_token=lambda d, n: streamed.append((d, n)),
                               **kwargs)
        assert remote.last_request_bytes > 0
        assert remote.last_frames_resized == RESIZED[case]
    assert answer.token_ids == local.token_ids
    assert answer.text == local.text == "".join(d for d, _ in streamed)
    assert streamed[-1][1] == answer.new_tokens == 8
    for name in ("mode_used", "compression", "frames_used", "frames_offered", "visual_tokens", "prompt_tokens",
                 "stop_reason"):
        assert getattr(answer, name) == getattr(local, name), name
    assert answer.plan == local.plan


def test_remote_sends_fewer_bytes_than_raw_frames(server):
    frames = camera_frames(12, seed=5)
    with RemoteEngine(server) as remote:
        remote.answer("What changed?", [VisualInput(frames)], mode="video", max_frames=6, max_new_tokens=2)
        assert remote.last_frames_resized  # 640x480 → 512x384 for the 4x video path
        assert remote.last_request_bytes < remote.last_raw_frame_bytes / 4


def test_a_repeated_frame_is_served_from_the_cache(server):
    visuals = [VisualInput(camera_frames(3, seed=6), keys=None)]  # keys are the client's business: unused here
    before = health(server)["cache"]
    with RemoteEngine(server) as remote:
        first = remote.answer("Describe.", visuals, mode="video", max_new_tokens=2)
        again = remote.answer("Describe it again.", visuals, mode="video", max_new_tokens=2)
        assert remote.cache_stats().hits == 3
    assert (first.frames_encoded, first.frames_from_cache) == (3, 0)
    assert (again.frames_encoded, again.frames_from_cache) == (0, 3)
    assert again.token_ids != [] and first.frames_used == again.frames_used == 3
    after = health(server)["cache"]
    assert after["hits"] - before["hits"] == 3 and after["misses"] - before["misses"] == 3


def test_two_concurrent_clients_both_get_answers(server):
    answers: dict[int, object] = {}
    errors: list[BaseException] = []

    def robot(seed: int) -> None:
        try:
            with RemoteEngine(server) as remote:
                answers[seed] = remote.answer("Anything moving?", [VisualInput(camera_frames(2, seed=10 + seed))],
                                              max_new_tokens=16)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=robot, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    assert not errors and sorted(answers) == [1, 2]
    assert all(a.new_tokens == 16 and a.stop_reason == "max_tokens" for a in answers.values())


def test_cancel_mid_stream_stops_the_server(server):
    ended_before = len(health(server)["requests"]["recent"])
    tokens: list[int] = []
    with RemoteEngine(server) as remote:
        answer = remote.answer("Tell me everything.", [VisualInput(camera_frames(1, seed=20))],
                               max_new_tokens=LONG_ANSWER, on_token=lambda _d, n: tokens.append(n),
                               cancel=lambda: len(tokens) >= 3)
    assert answer.stop_reason == "cancelled" and 3 <= answer.new_tokens < LONG_ANSWER
    record = wait_for_record(server, ended_before + 1)[-1]
    assert record["stop_reason"] == "cancelled"
    assert record["new_tokens"] < LONG_ANSWER // 4
    assert health(server)["requests"]["in_flight"] == 0


def test_openai_client_closing_the_stream_cancels(server):
    openai = pytest.importorskip("openai")
    ended_before = len(health(server)["requests"]["recent"])
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model="tiny-oryx-qwen2-seed0",
                                            messages=chat_body(camera_frames(1, seed=21))["messages"],
                                            max_tokens=LONG_ANSWER, stream=True)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    record = wait_for_record(server, ended_before + 1)[-1]
    assert record["stop_reason"] == "cancelled" and record["new_tokens"] < LONG_ANSWER // 4


def test_unreachable_server_is_a_clear_error_after_retries():
    remote = RemoteEngine("http://127.0.0.1:9", retries=2, backoff_s=0.01, connect_timeout_s=1)
    with remote, pytest.raises(RemoteEngineError, match=r"unreachable after 3 attempts: connection failed"):
        remote.answer("hello?")


# ----------------------------------------------------------------------------------------- auth and limits
def test_api_key_is_required_when_set(strict_server):
    assert httpx.get(f"{strict_server}/v1/models", timeout=30).status_code == 401
    assert httpx.get(f"{strict_server}/v1/models", headers={"Authorization": "Bearer nope"},
                     timeout=30).status_code == 401
    assert httpx.get(f"{strict_server}/health", timeout=30).status_code == 200  # counts only, no auth
    with RemoteEngine(strict_server) as anonymous, pytest.raises(RemoteRequestError, match="401"):
        anonymous.answer("hi")
    with RemoteEngine(strict_server, api_key=API_KEY) as remote:
        assert remote.answer("hi", max_new_tokens=3).new_tokens == 3


def test_the_client_plans_within_the_servers_image_limit(strict_server):
    # Two cameras of 8 small frames: the model would take all 16, the server takes 3 images per request.
    visuals = [VisualInput(camera_frames(8, 64, 48, seed=s), stamps_ns=[i * 10**8 for i in range(8)],
                           label=f"Camera {s}") for s in (40, 41)]
    with RemoteEngine(strict_server, api_key=API_KEY) as remote:
        answer = remote.answer("What changed?", visuals, max_new_tokens=2)
    assert answer.frames_used <= 3 and answer.frames_offered == 16
    assert answer.plan.frames_dropped == 16 - answer.frames_used  # counted, as for any frame cap


def test_size_limits_are_413_and_400(strict_server):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    noise = np.random.default_rng(0).integers(0, 256, (300, 320, 3), dtype=np.uint8)  # ~290 KB as PNG
    big = httpx.post(f"{strict_server}/v1/chat/completions", json=chat_body([noise, noise]), headers=auth,
                     timeout=30)
    assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
    small = camera_frames(4, 64, 48)
    many = httpx.post(f"{strict_server}/v1/chat/completions", json=chat_body(small), headers=auth, timeout=30)
    assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_images"
    wide = httpx.post(f"{strict_server}/v1/chat/completions", json=chat_body(camera_frames(1, 400, 300)),
                      headers=auth, timeout=30)
    assert wide.status_code == 400 and wide.json()["error"]["code"] == "image_too_large"


# ----------------------------------------------------------------------------------------- a dying replica
def test_a_killed_replica_gives_a_retry_or_a_clean_error(server):
    import ray

    actor_name = health(server)["actor_name"]
    outcome: dict[str, object] = {}
    streaming = threading.Event()

    def ask() -> None:
        with RemoteEngine(server, timeout_s=20, retries=2, backoff_s=0.5) as remote:
            try:
                outcome["answer"] = remote.answer("Keep talking.", [VisualInput(camera_frames(1, seed=30))],
                                                  max_new_tokens=LONG_ANSWER, on_token=lambda _d, _n: streaming.set())
            except RemoteEngineError as err:
                outcome["error"] = err

    thread = threading.Thread(target=ask)
    thread.start()
    assert streaming.wait(timeout=120), "no token arrived"
    ray.kill(ray.get_actor(actor_name, namespace="serve"), no_restart=True)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the client hung after its replica died"
    print("killed replica outcome:", outcome)
    if "error" in outcome:
        assert "broke off the answer" in str(outcome["error"]) or "unreachable" in str(outcome["error"])
    else:
        assert outcome["answer"].new_tokens > 0  # answered by a retry on a fresh replica
    wait_until_healthy(server, 1, timeout_s=180)  # Serve replaces the replica
    with RemoteEngine(server) as remote:
        assert remote.answer("Back?", max_new_tokens=2).new_tokens == 2
