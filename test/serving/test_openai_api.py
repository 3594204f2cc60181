"""The request parser: valid requests parse as documented, bad ones are RequestError 400 with a message, and
no JSON value whatsoever makes it raise anything else (property tests)."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oryx_ros.serving.openai_api import (
    RequestError,
    RequestLimits,
    check_bearer,
    decode_image,
    frame_content_key,
    parse_chat_request,
    parse_count_request,
    parse_json_body,
)

LIMITS = RequestLimits(max_images=4, max_image_pixels=200 * 200, max_new_tokens=256, default_max_new_tokens=32)


def data_url(frame: np.ndarray, ext: str = ".png", media: str = "image/png") -> str:
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    return f"data:{media};base64," + base64.b64encode(encoded.tobytes()).decode()


FRAME = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
PNG_URL = data_url(FRAME)


def request(*urls: str, **extra) -> dict:
    content = [{"type": "text", "text": "what is here?"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_defaults_one_item_of_every_image_in_auto_mode():
    chat = parse_chat_request(request(PNG_URL, PNG_URL), LIMITS)
    assert chat.question == "what is here?" and chat.mode == "auto" and chat.max_frames == 0
    assert [item.images for item in chat.items] == [(0, 1)] and chat.items[0].label is None
    assert chat.max_new_tokens == 32 and not chat.stream
    assert (chat.images[0].width, chat.images[0].height, chat.images[0].format) == (64, 48, "png")


def test_items_stamps_and_options():
    oryx = {"mode": "video", "max_frames": 2, "items": [{"label": "Camera left", "images": [1], "stamps_ns": [5]},
                                                         {"images": [0, 2], "stamps_ns": [1, 2]}]}
    chat = parse_chat_request(request(PNG_URL, PNG_URL, data_url(FRAME, ".jpg", "image/jpeg"), oryx=oryx,
                                      max_tokens=7, stream=True, stream_options={"include_usage": True}), LIMITS)
    assert [(i.label, i.images, i.stamps_ns) for i in chat.items] == [("Camera left", (1,), (5,)),
                                                                     (None, (0, 2), (1, 2))]
    assert (chat.mode, chat.max_frames, chat.max_new_tokens, chat.stream, chat.include_usage) == (
        "video", 2, 7, True, True)
    assert chat.images[2].format == "jpeg"


def test_png_round_trip_is_lossless_and_keyed_by_content():
    chat = parse_chat_request(request(PNG_URL), LIMITS)
    pixels = decode_image(chat.images[0])
    assert np.array_equal(pixels, FRAME)
    assert frame_content_key(pixels) == frame_content_key(FRAME.copy())
    assert frame_content_key(pixels) != frame_content_key(FRAME[:, :32])


@pytest.mark.parametrize(("body", "message"), [
    (request("https://example.com/a.png"), "never fetches"),
    (request("/home/robot/secret.png"), "never fetches"),
    (request("data:image/gif;base64,R0lGODlh"), "image/png"),
    (request("data:image/png;base64,!!!"), "base64"),
    (request("data:image/jpeg;base64," + PNG_URL.split(",")[1]), "declared image/jpeg"),
    (request(*[PNG_URL] * 5), "limit of 4"),
    (request(data_url(np.zeros((300, 300, 3), np.uint8))), "exceeds the server's limit"),
    (request(PNG_URL, oryx={"items": [{"images": [0]}, {"images": [0]}]}), "exactly once"),
    (request(PNG_URL, PNG_URL, oryx={"items": [{"images": [0, 1], "stamps_ns": [2, 1]}]}), "non-decreasing"),
    (request(PNG_URL, oryx={"mode": "fast"}), "oryx.mode"),
    (request(PNG_URL, oryx={"turbo": True}), "unknown oryx field"),
    (request(PNG_URL, max_tokens=10_000), "max_tokens"),
    (request(PNG_URL, stop=["\n"]), "not supported"),
    ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}, "exactly one"),
    ({"messages": [{"role": "user", "content": "look: <image>"}]}, "<image>"),
    ([], "JSON object"),
])
def test_bad_requests_are_refused_with_a_message(body, message):
    with pytest.raises(RequestError, match=message) as caught:
        parse_chat_request(body, LIMITS)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["message"]


def test_truncated_png_is_a_request_error():
    data = base64.b64decode(PNG_URL.split(",")[1])[:40]
    with pytest.raises(RequestError, match="corrupt"):
        chat = parse_chat_request(request("data:image/png;base64," + base64.b64encode(data).decode()), LIMITS)
        decode_image(chat.images[0])


def test_bearer_check():
    check_bearer(None, None)
    check_bearer("Bearer k", "k")
    for header in (None, "Bearer x", "Basic k", "k"):
        with pytest.raises(RequestError) as caught:
            check_bearer(header, "k")
        assert caught.value.status == 401


def test_count_request():
    assert parse_count_request({"question": "q", "labels": ["a", None]}) == ("q", ["a", None])
    with pytest.raises(RequestError):
        parse_count_request({"question": 3})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
# Requests that look almost right: the fields the parser reads, with arbitrary values.
near_requests = st.fixed_dictionaries({}, optional={
    "model": json_values, "max_tokens": json_values, "stream": json_values, "stream_options": json_values,
    "n": json_values, "stop": json_values,
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", 3])}, optional={
        "content": json_values | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"])},
                                                                optional={"text": json_values,
                                                                          "image_url": json_values}),
                                          max_size=3)}), max_size=2),
    "oryx": json_values | st.fixed_dictionaries({}, optional={
        "mode": json_values, "max_frames": json_values,
        "items": st.lists(st.fixed_dictionaries({}, optional={"images": json_values, "stamps_ns": json_values,
                                                              "label": json_values}), max_size=3)}),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, near_requests))
def test_arbitrary_json_never_raises_anything_but_a_request_error(payload):
    try:
        chat = parse_chat_request(payload, LIMITS)
    except RequestError as err:
        assert 400 <= err.status < 500 and str(err)
    else:
        assert isinstance(chat.question, str) and 1 <= chat.max_new_tokens <= LIMITS.max_new_tokens


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_json_or_a_request_error(body):
    try:
        parse_json_body(body)
    except RequestError as err:
        assert "JSON" in str(err)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["image/png", "image/jpeg"]))
def test_arbitrary_image_bytes_are_refused_cleanly(data, media):
    url = f"data:{media};base64," + base64.b64encode(data).decode()
    try:
        chat = parse_chat_request(request(url), LIMITS)
        decode_image(chat.images[0])
    except RequestError as err:
        assert err.status == 400


def test_json_body_round_trip():
    assert parse_json_body(json.dumps(request(PNG_URL)).encode())["model"] == "m"
