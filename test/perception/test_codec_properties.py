"""Property tests of the image codec on outside input: whatever the bytes, to_rgb gives uint8 (H, W, 3) and
to_depth_m float32 (H, W) with no value <= 0 or infinite, or they raise ImageConversionError with a known
reason; and the header read before decoding bounds what OpenCV then decodes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from oryx_ros.perception.image_codec import (
    IMAGE_ERROR_REASONS,
    ImageConversionError,
    numpy_to_compressed,
    to_depth_m,
    to_rgb,
)
from oryx_ros.perception.image_header import ImageHeaderError, read_image_header

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
IMAGE = TYPESTORE.types["sensor_msgs/msg/Image"]
HEADER = numpy_to_compressed(np.zeros((2, 2, 3), np.uint8), "png", COMPRESSED).header
# Small, so that a payload claiming a large size inside the limit costs the test little.
MAX_PIXELS = 256 * 256
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(ext: str, image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(ext, image)
    assert ok, ext
    return encoded.tobytes()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
    depth_mm = rng.integers(0, 10_000, (36, 48), dtype=np.uint16)
    seeds = {ext: _encoded(ext, rgb) for ext in (".jpg", ".png", ".webp", ".tiff", ".bmp", ".ppm", ".pam", ".ras",
                                                    ".jp2", ".gif", ".avif") if cv2.haveImageWriter(f"x{ext}")}
    seeds[".png16"] = _encoded(".png", depth_mm)
    seeds[".pgm16"] = _encoded(".pgm", depth_mm)
    seeds[".pfm"] = _encoded(".pfm", rgb.astype(np.float32))
    seeds[".hdr"] = _encoded(".hdr", rgb.astype(np.float32))
    seeds[".tiff-float"] = _encoded(".tiff", rgb.astype(np.float32))
    seeds["compressedDepth"] = bytes(numpy_to_compressed(depth_mm, "compressedDepth", COMPRESSED).data)
    return seeds


SEEDS = _seeds()
FORMATS = st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth png",
                           "32FC1; compressedDepth png", "32FC1; compressedDepth rvl", "", "tiff"])


def _check_contract(fmt: str, data: bytes, max_pixels: int = MAX_PIXELS) -> None:
    msg = COMPRESSED(header=HEADER, format=fmt, data=np.frombuffer(data, np.uint8))
    try:
        rgb = to_rgb(msg, max_pixels=max_pixels)
    except ImageConversionError as err:
        assert err.reason in IMAGE_ERROR_REASONS, err.reason
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert 0 < rgb.shape[0] * rgb.shape[1] <= max_pixels
    try:
        depth = to_depth_m(msg, max_pixels=max_pixels)
    except ImageConversionError as err:
        assert err.reason in IMAGE_ERROR_REASONS, err.reason
    else:
        assert depth.dtype == np.float32 and depth.ndim == 2
        assert 0 < depth.size <= max_pixels
        valid = depth[~np.isnan(depth)]
        assert np.isfinite(valid).all() and (valid > 0).all()


@st.composite
def mutated(draw, keep_prefix: int = 0) -> bytes:
    """A seed image with bytes replaced, 4-byte header fields overwritten, and perhaps truncated."""
    data = bytearray(draw(st.sampled_from(sorted(SEEDS.values()))))
    for _ in range(draw(st.integers(0, 4))):  # overwrite a field in the first 128 bytes (sizes live there)
        at = draw(st.integers(keep_prefix, min(len(data), 128) - 4))
        data[at : at + 4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(keep_prefix, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(keep_prefix, len(data)))]
    return bytes(data)


@PROPERTY
@given(fmt=FORMATS, data=st.binary(max_size=300))
def test_arbitrary_bytes_give_an_image_or_the_typed_error(fmt, data) -> None:
    _check_contract(fmt, data)


@PROPERTY
@given(fmt=FORMATS, data=mutated())
def test_mutated_images_give_an_image_or_the_typed_error(fmt, data) -> None:
    _check_contract(fmt, data)


@PROPERTY
@given(data=mutated(keep_prefix=12))
def test_the_header_bounds_what_opencv_decodes(data) -> None:
    # Signatures kept (12 bytes), so every payload is one OpenCV recognises: its header must be read or
    # refused, and when read, OpenCV must decode no more pixels than it says.
    try:
        header = read_image_header(data)
    except ImageHeaderError as err:
        assert err.reason in ("corrupt", "unknown_format")
        assert err.reason == "corrupt" or data.startswith(b"\x00\x00\x00")  # only a mutated ftyp/JP2 box
        return
    if header.pixels > MAX_PIXELS or len(data) < header.min_data_bytes:
        return  # the codec refuses it without decoding
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is not None:
        assert image.shape[0] * image.shape[1] <= header.pixels


@PROPERTY
@given(
    magic=st.sampled_from([b"P5", b"P6", b"P2", b"P7", b"PF", b"Pf", b"#?RADIANCE"]),
    width=st.integers(-5, 2**40),
    height=st.integers(-5, 2**40),
    extra=st.binary(max_size=64),
)
def test_random_text_headers_give_an_image_or_the_typed_error(magic, width, height, extra) -> None:
    if magic == b"P7":
        header = b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nENDHDR\n" % (width, height)
    elif magic == b"#?RADIANCE":
        header = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width)
    else:
        header = b"%s\n%d %d\n255\n" % (magic, width, height)
    _check_contract("png", header + extra)
    _check_contract("png", header + extra, max_pixels=2**62)  # no limit: the decoder's own checks


RAW_BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "mono8": 1, "mono16": 2, "16UC1": 2, "32FC1": 4, "yuv422": 2,
                       "bayer_rggb8": 1, "8UC3": 3, "64FC1": 8, "nv12": 1, "rgba16": 8, "bogus": 3}


@settings(max_examples=100, deadline=None)
@given(
    encoding=st.sampled_from(sorted(RAW_BYTES_PER_PIXEL)),
    height=st.integers(0, 70),
    width=st.integers(0, 70),
    step_extra=st.integers(-3, 5),
    is_bigendian=st.integers(0, 2),
    consistent=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.binary(max_size=400),
)
def test_arbitrary_raw_images_give_an_image_or_the_typed_error(encoding, height, width, step_extra, is_bigendian,
                                                               consistent, seed, data) -> None:
    step = max(0, width * RAW_BYTES_PER_PIXEL[encoding] + step_extra)
    if consistent:  # data of the size the fields say, so the conversion itself runs
        data = np.random.default_rng(seed).integers(0, 256, step * height, dtype=np.uint8).tobytes()
    msg = IMAGE(header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
                step=step, data=np.frombuffer(data, np.uint8))
    for convert in (to_rgb, to_depth_m):
        try:
            out = convert(msg, max_pixels=MAX_PIXELS)
        except ImageConversionError as err:
            assert err.reason in IMAGE_ERROR_REASONS
            continue
        if convert is to_rgb:
            assert out.dtype == np.uint8 and out.shape == (height, width, 3)
        else:
            valid = out[~np.isnan(out)]
            assert out.dtype == np.float32 and out.shape == (height, width)
            assert np.isfinite(valid).all() and (valid > 0).all()
