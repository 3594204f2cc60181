"""image_codec: every supported encoding both ways, compressed formats, each malformed case with its
reason, the pixel limit read from every OpenCV format's header, and the one output contract."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from oryx_ros.perception.image_codec import (
    IMAGE_ERROR_REASONS,
    MAX_DECODE_PIXELS,
    ImageConversionError,
    depth_m_to_16uc1,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    to_depth_m,
    to_rgb,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
H, W = 12, 16


def _families() -> list:
    families = [pytest.param("rosbags", id="rosbags")]
    has_rclpy = importlib.util.find_spec("sensor_msgs") is not None
    families.append(pytest.param("rclpy", id="rclpy", marks=pytest.mark.skipif(not has_rclpy, reason="no rclpy")))
    return families


@pytest.fixture(params=_families())
def msg_types(request) -> tuple[type, type]:
    """(Image, CompressedImage) classes of one message family."""
    if request.param == "rosbags":
        return TYPESTORE.types["sensor_msgs/msg/Image"], TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
    from sensor_msgs.msg import CompressedImage, Image

    return Image, CompressedImage


def _random_rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _smooth_rgb() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // (W - 1), y * 255 // (H - 1), np.full_like(x, 90)], axis=-1)
    return rgb.astype(np.uint8)


def _raw_image(encoding: str, data: bytes, *, height=H, width=W, step=None, is_bigendian=0):
    cls = TYPESTORE.types["sensor_msgs/msg/Image"]
    header = TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam"
    )
    bytes_per_pixel = len(data) // max(height * width, 1)
    return cls(header=header, height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
               step=width * bytes_per_pixel if step is None else step, data=np.frombuffer(data, np.uint8))


# --- raw colour --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "from_rgb"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_round_trip_exactly(msg_types, encoding, from_rgb) -> None:
    image_cls, _ = msg_types
    rgb = _random_rgb()
    native = np.ascontiguousarray(from_rgb(rgb))
    msg = numpy_to_image(native, encoding, image_cls)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, encoding, W * native.shape[2])
    np.testing.assert_array_equal(image_to_numpy(msg), native)
    out = to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_mono_encodings_become_grey_rgb(msg_types) -> None:
    image_cls, _ = msg_types
    mono8 = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    np.testing.assert_array_equal(to_rgb(numpy_to_image(mono8, "mono8", image_cls)), np.dstack([mono8] * 3))
    mono16 = mono8.astype(np.uint16) * 257  # 8-bit value v as 16-bit v*257 scales back to v
    msg = numpy_to_image(mono16, "mono16", image_cls)
    np.testing.assert_array_equal(image_to_numpy(msg), mono16)
    np.testing.assert_array_equal(to_rgb(msg), np.dstack([mono8] * 3))


@pytest.mark.parametrize(
    ("encoding", "code"),
    [
        ("yuv422", cv2.COLOR_RGB2YUV_UYVY),
        ("uyvy", cv2.COLOR_RGB2YUV_UYVY),
        ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2),
        ("yuyv", cv2.COLOR_RGB2YUV_YUYV),
    ],
)
def test_yuv422_encodings_decode_to_rgb(msg_types, encoding, code) -> None:
    image_cls, _ = msg_types
    rgb = np.repeat(_random_rgb()[:, ::2], 2, axis=1)  # 4:2:2 shares chroma across pixel pairs
    packed = cv2.cvtColor(rgb, code)
    assert packed.shape == (H, W, 2)
    msg = numpy_to_image(packed, encoding, image_cls)
    assert msg.step == 2 * W
    out = to_rgb(msg)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3  # YUV round-off only


def test_row_padding_in_step_is_skipped() -> None:
    rgb = _random_rgb()
    step = W * 3 + 5
    padded = np.zeros((H, step), np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, W * 3)
    padded[:, W * 3 :] = 0xEE
    msg = _raw_image("rgb8", padded.tobytes(), step=step)
    np.testing.assert_array_equal(to_rgb(msg), rgb)


def test_result_owns_its_memory() -> None:
    rgb = _random_rgb()
    msg = numpy_to_image(rgb, "rgb8", TYPESTORE.types["sensor_msgs/msg/Image"])
    out = to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(to_rgb(msg), rgb)


# --- depth ---------------------------------------------------------------------------------------------


def test_16uc1_is_millimetres_with_zero_as_no_return(msg_types) -> None:
    image_cls, _ = msg_types
    depth_mm = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 37
    msg = numpy_to_image(depth_mm, "16UC1", image_cls)
    depth_m = to_depth_m(msg)
    assert depth_m.dtype == np.float32 and depth_m.shape == (H, W)
    assert np.isnan(depth_m[0, 0])  # 0 mm
    np.testing.assert_allclose(depth_m.ravel()[1:], depth_mm.ravel()[1:] / 1000.0, rtol=1e-6)


def test_32fc1_is_metres_and_invalid_values_become_nan(msg_types) -> None:
    image_cls, _ = msg_types
    depth = np.linspace(0.3, 7.0, H * W, dtype=np.float32).reshape(H, W)
    depth[0, :4] = [np.nan, np.inf, 0.0, -1.0]
    depth_m = to_depth_m(numpy_to_image(depth, "32FC1", image_cls))
    assert np.isnan(depth_m[0, :4]).all()
    np.testing.assert_array_equal(depth_m[1:], depth[1:])


def test_mono16_depth_reads_as_millimetres() -> None:
    depth_mm = np.full((H, W), 1500, np.uint16)
    depth_m = to_depth_m(numpy_to_image(depth_mm, "mono16", TYPESTORE.types["sensor_msgs/msg/Image"]))
    np.testing.assert_allclose(depth_m, 1.5)


@pytest.mark.parametrize(("encoding", "dtype"), [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_big_endian_data_is_swapped(encoding, dtype) -> None:
    values = (np.arange(H * W).reshape(H, W) + 500).astype(dtype)
    msg = _raw_image(encoding, values.astype(np.dtype(dtype).newbyteorder(">")).tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(image_to_numpy(msg), values)


def test_depth_m_to_16uc1_rounds_and_marks_invalid_as_zero() -> None:
    depth_m = np.array([[1.2344, 1.2346, np.nan, -1.0, 70.0, 0.0]], np.float32)
    np.testing.assert_array_equal(depth_m_to_16uc1(depth_m), [[1234, 1235, 0, 0, 0, 0]])


# --- compressed ----------------------------------------------------------------------------------------


def test_png_is_lossless_and_states_its_formats(msg_types) -> None:
    _, compressed_cls = msg_types
    rgb = _random_rgb(1)
    msg = numpy_to_compressed(rgb, "png", compressed_cls)
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(to_rgb(msg), rgb)
    bgr_msg = numpy_to_compressed(np.ascontiguousarray(rgb[..., ::-1]), "png", compressed_cls, encoding="bgr8")
    np.testing.assert_array_equal(to_rgb(bgr_msg), rgb)


def test_jpeg_is_close_on_smooth_images(msg_types) -> None:
    _, compressed_cls = msg_types
    rgb = _smooth_rgb()
    msg = numpy_to_compressed(rgb, "jpeg", compressed_cls, jpeg_quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(to_rgb(msg).astype(int) - rgb.astype(int)).mean() < 3.0


def test_compressed_mono_and_16bit_png() -> None:
    compressed_cls = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
    mono = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    np.testing.assert_array_equal(to_rgb(numpy_to_compressed(mono, "png", compressed_cls)), np.dstack([mono] * 3))
    depth_mm = np.full((H, W), 2500, np.uint16)
    depth_mm[0, 0] = 0
    msg = numpy_to_compressed(depth_mm, "png", compressed_cls)
    assert msg.format == "mono16; png compressed mono16"
    depth_m = to_depth_m(msg)
    assert np.isnan(depth_m[0, 0]) and np.allclose(depth_m.ravel()[1:], 2.5)


def test_compressed_depth_16uc1_is_exact(msg_types) -> None:
    _, compressed_cls = msg_types
    depth_mm = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 211) % 60000
    msg = numpy_to_compressed(depth_mm, "compressedDepth", compressed_cls)
    assert msg.format == "16UC1; compressedDepth png"
    depth_m = to_depth_m(msg)
    valid = depth_mm != 0
    assert np.isnan(depth_m[~valid]).all()
    np.testing.assert_allclose(depth_m[valid], depth_mm[valid] / 1000.0, rtol=1e-6)


def test_compressed_depth_32fc1_is_within_quantisation(msg_types) -> None:
    _, compressed_cls = msg_types
    depth = np.linspace(0.3, 9.5, H * W, dtype=np.float32).reshape(H, W)
    depth[0, 0] = np.nan
    msg = numpy_to_compressed(depth, "compressedDepth", compressed_cls)
    assert msg.format == "32FC1; compressedDepth png"
    depth_m = to_depth_m(msg)
    assert np.isnan(depth_m[0, 0])
    # One quantisation step of A / d + B is d^2 / A metres at depth d (A = 100 * 101).
    tolerance = depth.ravel()[1:] ** 2 / (100 * 101) + 1e-4
    assert (np.abs(depth_m.ravel()[1:] - depth.ravel()[1:]) <= tolerance).all()


# --- malformed input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (lambda: _raw_image("rgb8", bytes(H * W * 3), step=W * 3 - 1), "step"),
        (lambda: _raw_image("rgb8", bytes(H * W * 3 - 1), step=W * 3), "expected step\\*height"),
        (lambda: _raw_image("rgb8", bytes(H * W * 3 + 3), step=W * 3), "expected step\\*height"),
        (lambda: _raw_image("rgb9000", bytes(H * W * 3)), "unknown image encoding"),
        (lambda: _raw_image("rgb8", b"", height=0, width=W, step=W * 3), "zero size"),
        (lambda: _raw_image("rgb8", b"", height=H, width=0, step=0), "zero size"),
        (lambda: _raw_image("16UC1", bytes(H * W * 2), is_bigendian=2), "is_bigendian"),
        (lambda: _raw_image("yuv422", bytes(H * 15 * 2), width=15), "odd width"),
        (lambda: _raw_image("nv12", bytes(H * W)), "planar"),
    ],
)
def test_malformed_raw_images_raise(message, match) -> None:
    with pytest.raises(ImageConversionError, match=match) as caught:
        to_rgb(message())
    assert caught.value.reason in IMAGE_ERROR_REASONS


def test_wrong_kind_of_image_raises() -> None:
    image_cls = TYPESTORE.types["sensor_msgs/msg/Image"]
    with pytest.raises(ImageConversionError, match="to_depth_m"):
        to_rgb(numpy_to_image(np.zeros((H, W), np.uint16), "16UC1", image_cls))
    with pytest.raises(ImageConversionError, match="not depth"):
        to_depth_m(numpy_to_image(_random_rgb(), "rgb8", image_cls))
    with pytest.raises(ImageConversionError, match="to rgb8"):
        to_rgb(_raw_image("8UC3", bytes(H * W * 3)))


def test_malformed_compressed_images_raise() -> None:
    cls = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
    header = numpy_to_compressed(_random_rgb(), "png", cls).header

    def compressed(fmt: str, data: bytes):
        return cls(header=header, format=fmt, data=np.frombuffer(data, np.uint8))

    with pytest.raises(ImageConversionError, match="no data"):
        to_rgb(compressed("jpeg", b""))
    with pytest.raises(ImageConversionError, match="cannot decode"):
        to_rgb(compressed("jpeg", b"definitely not a jpeg"))
    with pytest.raises(ImageConversionError, match="only png"):
        to_depth_m(compressed("16UC1; compressedDepth rvl", bytes(40)))
    with pytest.raises(ImageConversionError, match="header"):
        to_depth_m(compressed("16UC1; compressedDepth png", bytes(8)))
    with pytest.raises(ImageConversionError, match="to_depth_m"):
        to_rgb(compressed("16UC1; compressedDepth png", bytes(40)))
    with pytest.raises(ImageConversionError, match="not 16-bit"):
        to_depth_m(numpy_to_compressed(_random_rgb(), "png", cls))


@pytest.mark.parametrize(
    ("array", "encoding", "match"),
    [
        (np.zeros((H, W, 3), np.float32), "rgb8", "dtype"),
        (np.zeros((H, W), np.uint8), "rgb8", "shape"),
        (np.zeros((H, W, 4), np.uint8), "bgr8", "shape"),
        (np.zeros((0, W, 3), np.uint8), "rgb8", "empty"),
        (np.zeros((H, W), np.float32), "16UC1", "dtype"),
        (np.zeros((H, W), np.uint8), "bogus", "unknown image encoding"),
    ],
)
def test_numpy_to_image_rejects_mismatched_arrays(array, encoding, match) -> None:
    with pytest.raises(ImageConversionError, match=match):
        numpy_to_image(array, encoding, TYPESTORE.types["sensor_msgs/msg/Image"])


def test_numpy_to_compressed_rejects_bad_requests() -> None:
    cls = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
    with pytest.raises(ImageConversionError, match="unknown compressed format"):
        numpy_to_compressed(_random_rgb(), "webp2", cls)
    with pytest.raises(ImageConversionError, match="cannot jpeg-compress"):
        numpy_to_compressed(np.zeros((H, W), np.uint16), "jpeg", cls)
    with pytest.raises(ImageConversionError, match="uint16 mm or float32 m"):
        numpy_to_compressed(np.zeros((H, W), np.float64), "compressedDepth", cls)


def test_conversion_error_is_a_value_error_with_a_reason() -> None:
    import pickle

    assert issubclass(ImageConversionError, ValueError)
    err = pickle.loads(pickle.dumps(ImageConversionError("big", "too_many_pixels")))
    assert (str(err), err.reason) == ("big", "too_many_pixels")


# --- limits and the output contract ----------------------------------------------------------------------

COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]


def _compressed(data: bytes, fmt: str = "jpeg"):
    header = numpy_to_compressed(_random_rgb(), "png", COMPRESSED).header
    return COMPRESSED(header=header, format=fmt, data=np.frombuffer(data, np.uint8))


def _encoded(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, encoded = cv2.imencode(ext, image, list(params))
    assert ok
    return encoded.tobytes()


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose SOF is patched to claim ``width`` x ``height`` (the scan stays 8x8)."""
    data = bytearray(_encoded(".jpg", _random_rgb()[:8, :8]))
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _png_with_size(width: int, height: int) -> bytes:
    """A valid PNG whose IHDR is patched (CRC left stale: libpng would fail after allocating)."""
    data = bytearray(_encoded(".png", _random_rgb()))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


CH, CW = 36, 48  # JPEG 2000's default resolution levels need more than 12x16


def _colour_images() -> dict[str, bytes]:
    """One small image in every format this OpenCV build encodes (of those it decodes: not HDR and PFM,
    which are float, tested below)."""
    rgb = np.random.default_rng(2).integers(0, 256, (CH, CW, 3), dtype=np.uint8)
    images = {"jpeg": _encoded(".jpg", rgb), "png": _encoded(".png", rgb), "webp": _encoded(".webp", rgb),
              "webp lossless": _encoded(".webp", rgb, (cv2.IMWRITE_WEBP_QUALITY, 101)),
              "tiff": _encoded(".tiff", rgb), "bmp": _encoded(".bmp", rgb), "ppm": _encoded(".ppm", rgb),
              "pgm": _encoded(".pgm", rgb[..., 0]), "pbm": _encoded(".pbm", rgb[..., 0]),
              "pam": _encoded(".pam", rgb), "sun raster": _encoded(".ras", rgb), "jpeg2000": _encoded(".jp2", rgb)}
    for name, ext in (("avif", ".avif"), ("gif", ".gif")):
        if cv2.haveImageWriter(f"x{ext}"):
            images[name] = _encoded(ext, rgb)
    images["webp extended"] = _animated_webp(rgb)
    return images


def _animated_webp(rgb: np.ndarray) -> bytes:
    """An animated WebP (VP8X canvas), which OpenCV does not write; Pillow does."""
    import io

    from PIL import Image

    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    assert out.getvalue()[12:16] == b"VP8X"
    return out.getvalue()


@pytest.mark.parametrize(("name", "data"), list(_colour_images().items()))
def test_every_colour_codec_decodes_to_uint8_rgb(name, data) -> None:
    out = to_rgb(_compressed(data))
    assert out.dtype == np.uint8 and out.shape == (CH, CW, 3), name


@pytest.mark.parametrize(("name", "data"), list(_colour_images().items()))
def test_every_codec_is_refused_from_its_header_above_the_limit(name, data) -> None:
    # The limit one pixel below the image's size refuses it; at its size it decodes.
    with pytest.raises(ImageConversionError, match="more than the limit") as caught:
        to_rgb(_compressed(data), max_pixels=CH * CW - 1)
    assert caught.value.reason == "too_many_pixels"
    assert to_rgb(_compressed(data), max_pixels=CH * CW).shape == (CH, CW, 3)


def test_the_default_limit_fits_4k() -> None:
    assert MAX_DECODE_PIXELS >= 4096 * 2160
    with pytest.raises(ImageConversionError) as caught:
        to_rgb(_compressed(_jpeg_with_size(16384, 16384)))
    assert caught.value.reason == "too_many_pixels"
    with pytest.raises(ImageConversionError) as caught:
        to_depth_m(_compressed(_png_with_size(16384, 16384), "png"))
    assert caught.value.reason == "too_many_pixels"
    # A JPEG claiming UHD decodes (libjpeg fills what the 8x8 scan does not hold).
    assert to_rgb(_compressed(_jpeg_with_size(3840, 2160))).shape == (2160, 3840, 3)


def test_a_png_too_short_for_its_rows_is_refused_before_decoding() -> None:
    # 4000x2000 RGB needs 24 MB of rows; deflate cannot get those from a few hundred bytes.
    with pytest.raises(ImageConversionError) as caught:
        to_rgb(_compressed(_png_with_size(4000, 2000), "png"))
    assert caught.value.reason == "truncated"


def test_raw_images_have_the_limit_too() -> None:
    msg = numpy_to_image(_random_rgb(), "rgb8", TYPESTORE.types["sensor_msgs/msg/Image"])
    with pytest.raises(ImageConversionError) as caught:
        to_rgb(msg, max_pixels=H * W - 1)
    assert caught.value.reason == "too_many_pixels"
    depth = numpy_to_image(np.ones((H, W), np.uint16), "16UC1", TYPESTORE.types["sensor_msgs/msg/Image"])
    with pytest.raises(ImageConversionError) as caught:
        to_depth_m(depth, max_pixels=10)
    assert caught.value.reason == "too_many_pixels"
    assert to_depth_m(depth, max_pixels=H * W).shape == (H, W)


@pytest.mark.parametrize(
    ("ext", "image"),
    [
        (".pfm", np.full((H, W, 3), 0.5, np.float32)),
        (".pfm", np.full((H, W), 0.5, np.float32)),
        (".hdr", np.full((H, W, 3), 0.5, np.float32)),
        (".tiff", np.full((H, W, 3), 0.5, np.float32)),
        (".tiff", np.full((H, W, 3), 0.5, np.float64)),
    ],
)
def test_float_colour_is_refused_not_returned_as_float(ext, image) -> None:
    data = _encoded(ext, image)
    with pytest.raises(ImageConversionError) as caught:
        to_rgb(_compressed(data))
    assert caught.value.reason == "float_colour"
    with pytest.raises(ImageConversionError) as caught:
        to_depth_m(_compressed(data))
    assert caught.value.reason == "unsupported_dtype"


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int8])
def test_signed_and_wide_integer_tiffs_raise_the_typed_error(dtype) -> None:
    data = _encoded(".tiff", np.ones((H, W, 3), dtype))
    for convert in (to_rgb, to_depth_m):
        with pytest.raises(ImageConversionError) as caught:
            convert(_compressed(data))
        assert caught.value.reason == "unsupported_dtype"


def test_16bit_depth_from_other_codecs_and_colour_refused_as_depth() -> None:
    depth_mm = np.full((H, W), 1234, np.uint16)
    for ext in (".tiff", ".pgm"):
        np.testing.assert_allclose(to_depth_m(_compressed(_encoded(ext, depth_mm))), 1.234, rtol=1e-6)
    with pytest.raises(ImageConversionError) as caught:
        to_depth_m(_compressed(_encoded(".jpg", _random_rgb())))
    assert caught.value.reason == "wrong_kind"


def test_compressed_depth_with_a_hostile_quantisation_header_gives_no_bad_depth() -> None:
    import struct

    depth = np.linspace(0.3, 9.5, H * W, dtype=np.float32).reshape(H, W)
    good = numpy_to_compressed(depth, "compressedDepth", COMPRESSED)
    png = bytes(good.data)[12:]
    stored = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    # B equal to a stored value divides by zero; a negative A makes every depth negative.
    for quant_a, quant_b in ((10100.0, float(stored[3, 3])), (-10100.0, -1009.0), (1e38, -1e-38)):
        msg = _compressed(struct.pack("<iff", 0, quant_a, quant_b) + png, "32FC1; compressedDepth png")
        depth_m = to_depth_m(msg)
        assert depth_m.dtype == np.float32 and depth_m.shape == (H, W)
        finite = depth_m[~np.isnan(depth_m)]
        assert np.isfinite(finite).all() and (finite > 0).all()
    for quant_a in (float("nan"), float("inf")):
        with pytest.raises(ImageConversionError) as caught:
            to_depth_m(_compressed(struct.pack("<iff", 0, quant_a, 1.0) + png, "32FC1; compressedDepth png"))
        assert caught.value.reason == "corrupt"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"definitely not a jpeg", "unknown_format"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt"),  # a JPEG that ends in its first segment
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "corrupt"),  # IHDR cut short
        (b"RIFF\x00\x00\x00\x00WEBPVP8Z", "corrupt"),
        (b"P6\n16 12\n", "corrupt"),  # no maxval, no data
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12 16\n", "corrupt"),
    ],
)
def test_corrupt_headers_raise_with_a_reason(data, reason) -> None:
    with pytest.raises(ImageConversionError) as caught:
        to_rgb(_compressed(data))
    assert caught.value.reason == reason


def test_corrupt_png_and_jpeg_data_raise_the_typed_error() -> None:
    for data in (_encoded(".png", _random_rgb()), _encoded(".jpg", _random_rgb())):
        broken = bytearray(data)
        broken[len(broken) // 2 :] = bytes(len(broken) - len(broken) // 2)  # zero the second half
        try:
            out = to_rgb(_compressed(bytes(broken)))
        except ImageConversionError as err:
            assert err.reason in IMAGE_ERROR_REASONS
        else:  # libjpeg conceals damage in the scan data: still the contract
            assert out.dtype == np.uint8 and out.shape == (H, W, 3)
