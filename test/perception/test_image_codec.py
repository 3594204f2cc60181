"""image_codec: every supported encoding both ways, compressed formats, and each malformed case."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from oryx_ros.perception.image_codec import (
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
    with pytest.raises(ImageConversionError, match=match):
        to_rgb(message())


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


def test_conversion_error_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)
