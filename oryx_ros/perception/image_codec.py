"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, for rclpy and rosbags messages alike.

Messages are duck-typed (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data`` for
Image; ``format``, ``data`` for CompressedImage), so this module imports no ROS client library. Raw images
are decoded by rosbags-image (``image_to_cvimage``) after this module has checked the message, because
rosbags-image trusts ``step`` and the data length; compressed images are decoded with OpenCV directly,
because rosbags-image reads them with ``IMREAD_ANYCOLOR``, which truncates 16-bit PNG depth to 8 bits.

Outputs follow oryx_ros.perception.frames: colour is RGB ``uint8`` ``(H, W, 3)``, depth is ``float32``
metres ``(H, W)`` with NaN where the sensor gave no return.
"""

from __future__ import annotations

import array
import struct
import sys
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.image import image_to_cvimage
from rosbags.image.image import ENC_RE, ENCODINGMAP, ImageError

__all__ = [
    "COLOUR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "ImageConversionError",
    "depth_m_to_16uc1",
    "image_to_numpy",
    "is_compressed",
    "numpy_to_compressed",
    "numpy_to_image",
    "to_depth_m",
    "to_rgb",
]

# Encodings that to_rgb() accepts on raw images: every named colour/mono/YUV/Bayer encoding that
# rosbags-image can convert to rgb8 (8- and 16-bit; 16-bit is scaled to 8-bit).
COLOUR_ENCODINGS: Final = frozenset(ENCODINGMAP)
# Depth encodings of REP 118 / image_pipeline: 16UC1 is millimetres, 32FC1 is metres.
DEPTH_ENCODINGS: Final = frozenset({"16UC1", "32FC1"})
_YUV422_ENCODINGS: Final = frozenset({"yuv422", "uyvy", "yuv422_yuy2", "yuyv"})
_MM_PER_M: Final = 1000.0
# compressed_depth_image_transport prepends this header to the PNG: int32 format, float32 depthParam[2].
_COMPRESSED_DEPTH_HEADER: Final = struct.Struct("<iff")
# Its default quantisation for 32FC1 (depth_quantization=100, depth_max=10 m):
# stored = A / depth_m + B, with A = q * (q + 1) and B = 1 - A / depth_max.
_DEFAULT_DEPTH_QUANTIZATION: Final = 100.0
_DEFAULT_DEPTH_MAX_M: Final = 10.0
_HOST_IS_BIGENDIAN: Final = sys.byteorder == "big"


class ImageConversionError(ValueError):
    """A message that cannot be converted: malformed, unsupported encoding, or undecodable data."""


def is_compressed(msg: Any) -> bool:
    """True for a sensor_msgs/CompressedImage (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


# --------------------------------------------------------------------------------------------------
# Raw sensor_msgs/Image
# --------------------------------------------------------------------------------------------------


def _bytes_per_pixel(encoding: str) -> tuple[int, str, int]:
    """(bytes per pixel, numpy dtype name, channels) of a raw encoding, or ImageConversionError."""
    if encoding in ENCODINGMAP:
        bits, _, dtype, channels = ENCODINGMAP[encoding]
        if encoding in ("nv12", "nv21"):
            # Planar 4:2:0 needs height * 3 / 2 rows: not a per-pixel layout this module supports.
            raise ImageConversionError(f"unsupported encoding {encoding!r} (planar YUV 4:2:0)")
        return bits // 8 * channels, dtype, channels
    match = ENC_RE.fullmatch(encoding)
    if match is None:
        raise ImageConversionError(f"unknown image encoding {encoding!r}")
    dtype = np.dtype(
        {"8U": "uint8", "8S": "int8", "16U": "uint16", "16S": "int16", "32S": "int32", "32F": "float32",
         "64F": "float64"}[match.group(1)]
    )
    channels = int(match.group(2) or 1)
    return dtype.itemsize * channels, dtype.name, channels


class _PackedImage:
    """An Image-like view with row padding removed, as rosbags-image expects (it ignores ``step``)."""

    def __init__(self, msg: Any, data: npt.NDArray[np.uint8]) -> None:
        self.height, self.width = int(msg.height), int(msg.width)
        self.encoding, self.is_bigendian = msg.encoding, int(msg.is_bigendian)
        self.step = data.size // max(self.height, 1)
        self.data = data


def _checked_raw(msg: Any) -> _PackedImage:
    """Validate a raw Image (size, step, data length, endianness flag) and drop row padding."""
    for name in ("height", "width", "encoding", "is_bigendian", "step", "data"):
        if not hasattr(msg, name):
            raise ImageConversionError(f"not a sensor_msgs/Image: missing field {name!r}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{encoding} image has zero size ({width}x{height})")
    pixel_bytes, _, _ = _bytes_per_pixel(encoding)
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(f"{encoding} image has odd width {width} (4:2:2 pairs pixels)")
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding} image step {step} is less than width*bytes_per_pixel = {width}*{pixel_bytes}"
        )
    if int(msg.is_bigendian) not in (0, 1):
        raise ImageConversionError(f"is_bigendian must be 0 or 1, got {msg.is_bigendian!r}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageConversionError(
            f"{encoding} image data has {data.size} bytes, expected step*height = {step}*{height} = "
            f"{step * height}"
        )
    if step != row_bytes:
        data = np.ascontiguousarray(data.reshape(height, step)[:, :row_bytes]).reshape(-1)
    return _PackedImage(msg, data)


def _owned(image: np.ndarray) -> np.ndarray:
    """The array itself if it owns its memory, else a copy (never alias a message's buffer)."""
    return image if image.flags.owndata and image.flags.writeable else image.copy()


def image_to_numpy(msg: Any) -> np.ndarray:
    """Raw Image → array in the message's own encoding and channel order, native byte order.

    Shape ``(H, W)`` for one channel, ``(H, W, C)`` otherwise (YUV 4:2:2 gives ``(H, W, 2)``).
    """
    packed = _checked_raw(msg)
    try:
        image = image_to_cvimage(packed)
    except (ImageError, ValueError, TypeError) as err:
        raise ImageConversionError(f"cannot read {packed.encoding} image: {err}") from err
    return _owned(image)


# --------------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage
# --------------------------------------------------------------------------------------------------


def _format_encoding(fmt: str) -> str:
    """The original encoding named before ';' in an image_transport format string ('' if none)."""
    head = fmt.split(";", 1)[0].strip()
    return head if ";" in fmt else ""


def _imdecode(payload: npt.NDArray[np.uint8] | bytes, what: str) -> np.ndarray:
    buffer = np.frombuffer(payload, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageConversionError(f"{what} has no data")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageConversionError(f"{what}: OpenCV cannot decode {buffer.size} bytes")
    return image


def _decode_compressed_depth(msg: Any) -> npt.NDArray[np.float32]:
    """compressed_depth_image_transport payload (header + PNG) → float32 metres, NaN = no return."""
    fmt = str(msg.format)
    if "rvl" in fmt.lower():
        raise ImageConversionError(f"unsupported compressedDepth codec in format {fmt!r} (only png)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size <= _COMPRESSED_DEPTH_HEADER.size:
        raise ImageConversionError(f"compressedDepth image has only {data.size} bytes (header is 12)")
    _, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack(data[: _COMPRESSED_DEPTH_HEADER.size].tobytes())
    stored = _imdecode(data[_COMPRESSED_DEPTH_HEADER.size :], f"compressedDepth ({fmt!r})")
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ImageConversionError(f"compressedDepth PNG must be 16-bit single channel, got {stored.dtype}")
    encoding = _format_encoding(fmt) or "16UC1"
    if encoding == "16UC1":
        return _mm_to_m(stored)
    if encoding == "32FC1":
        depth_m = np.full(stored.shape, np.nan, dtype=np.float32)
        valid = stored != 0
        depth_m[valid] = quant_a / (stored[valid].astype(np.float32) - quant_b)
        return depth_m
    raise ImageConversionError(f"compressedDepth with unsupported encoding {encoding!r} in {fmt!r}")


def _decode_compressed(msg: Any) -> np.ndarray:
    """CompressedImage → OpenCV array (BGR/BGRA/gray, 8- or 16-bit) as stored in the file."""
    if not hasattr(msg, "data"):
        raise ImageConversionError("not a sensor_msgs/CompressedImage: missing field 'data'")
    return _imdecode(msg.data, f"compressed image ({msg.format!r})")


# --------------------------------------------------------------------------------------------------
# Public conversions
# --------------------------------------------------------------------------------------------------


def to_rgb(msg: Any) -> npt.NDArray[np.uint8]:
    """Image or CompressedImage → RGB ``uint8`` array ``(H, W, 3)`` (16-bit input scaled to 8-bit)."""
    if is_compressed(msg):
        if "compresseddepth" in str(msg.format).lower():
            raise ImageConversionError(f"{msg.format!r} is a depth image: use to_depth_m()")
        image = _decode_compressed(msg)
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)  # 16 → 8 bit keeps the top byte
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(image.shape[2])
        if code is None:
            raise ImageConversionError(f"compressed image with {image.shape[2]} channels")
        return cv2.cvtColor(image, code)

    packed = _checked_raw(msg)
    if packed.encoding not in COLOUR_ENCODINGS:
        hint = " (a depth image: use to_depth_m())" if packed.encoding in DEPTH_ENCODINGS else ""
        raise ImageConversionError(f"cannot convert encoding {packed.encoding!r} to rgb8{hint}")
    try:
        image = image_to_cvimage(packed, "rgb8")
    except (ImageError, ValueError, TypeError, cv2.error) as err:
        raise ImageConversionError(f"cannot convert {packed.encoding} image to rgb8: {err}") from err
    return _owned(np.asarray(image, dtype=np.uint8))


def _mm_to_m(depth_mm: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    depth_m = depth_mm.astype(np.float32) / np.float32(_MM_PER_M)
    depth_m[depth_mm == 0] = np.nan  # 0 mm is "no return" in 16UC1 (REP 118)
    return depth_m


def to_depth_m(msg: Any) -> npt.NDArray[np.float32]:
    """Depth Image or CompressedImage → ``float32`` metres ``(H, W)``, NaN where there is no return.

    16UC1 (and mono16) is millimetres with 0 = no return; 32FC1 is metres, where NaN, ±Inf (REP 118's
    too-close / too-far) and values <= 0 all become NaN, since none of them is a usable 3D point.
    Compressed: compressed_depth_image_transport ("16UC1; compressedDepth png", "32FC1; compressedDepth
    png") and plain 16-bit PNG.
    """
    if is_compressed(msg):
        if "compresseddepth" in str(msg.format).lower():
            return _decode_compressed_depth(msg)
        image = _decode_compressed(msg)
        if image.dtype != np.uint16 or image.ndim != 2:
            raise ImageConversionError(
                f"compressed image {msg.format!r} is not 16-bit single-channel depth ({image.dtype}, "
                f"shape {image.shape})"
            )
        return _mm_to_m(image)

    if msg.encoding not in (*DEPTH_ENCODINGS, "mono16"):
        raise ImageConversionError(f"encoding {msg.encoding!r} is not depth (16UC1 mm or 32FC1 m)")
    image = image_to_numpy(msg)
    if msg.encoding == "32FC1":
        depth_m = image.astype(np.float32, copy=False)
        depth_m[~np.isfinite(depth_m) | (depth_m <= 0)] = np.nan
        return depth_m
    return _mm_to_m(image)


def depth_m_to_16uc1(depth_m: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    """Metres → 16UC1 millimetres (rounded); NaN, <= 0 and beyond 65.535 m become 0 (no return)."""
    depth_mm = np.rint(np.asarray(depth_m, dtype=np.float64) * _MM_PER_M)
    invalid = ~np.isfinite(depth_mm) | (depth_mm <= 0) | (depth_mm > np.iinfo(np.uint16).max)
    depth_mm[invalid] = 0
    return depth_mm.astype(np.uint16)


# --------------------------------------------------------------------------------------------------
# numpy → message
# --------------------------------------------------------------------------------------------------


def _encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    _, dtype, channels = _bytes_per_pixel(encoding)
    return np.dtype(dtype), channels


def _is_rosbags_type(msg_type: type) -> bool:
    return hasattr(msg_type, "__msgtype__")


def _default_header(msg_type: type) -> Any:
    """An empty std_msgs/Header of the same family as ``msg_type`` (rosbags types have no defaults)."""
    module = sys.modules[msg_type.__module__]
    time_type = module.builtin_interfaces__msg__Time
    return module.std_msgs__msg__Header(stamp=time_type(sec=0, nanosec=0), frame_id="")


def _message(msg_type: type, header: Any, payload: bytes, **fields: Any) -> Any:
    """Instantiate an rclpy or rosbags message with a uint8[] ``data`` field."""
    if _is_rosbags_type(msg_type):
        header = header if header is not None else _default_header(msg_type)
        return msg_type(header=header, data=np.frombuffer(payload, dtype=np.uint8), **fields)
    # rclpy stores uint8[] as array.array('B'); building it from bytes is 10x faster than from bytes
    # through the field setter's per-element checks.
    msg = msg_type(**fields) if header is None else msg_type(header=header, **fields)
    msg.data = array.array("B", payload)
    return msg


def numpy_to_image(array_: np.ndarray, encoding: str, msg_type: type, header: Any = None) -> Any:
    """Array → sensor_msgs/Image of class ``msg_type`` (rclpy's or a rosbags typestore's).

    The array must already be in ``encoding``'s layout and dtype: ``(H, W, 3)`` uint8 for rgb8/bgr8,
    ``(H, W)`` uint16 for mono16/16UC1 (millimetres, see depth_m_to_16uc1), ``(H, W)`` float32 for
    32FC1 (metres), ``(H, W, 2)`` uint8 for the YUV 4:2:2 encodings, and so on. Rows are packed
    (``step = W * bytes_per_pixel``) in native byte order.
    """
    dtype, channels = _encoding_layout(encoding)
    array_ = np.asarray(array_)
    expected_ndim = 2 if channels == 1 else 3
    if array_.ndim == 3 and channels == 1 and array_.shape[2] == 1:
        array_ = array_[:, :, 0]
    if array_.ndim != expected_ndim or (channels > 1 and array_.shape[2] != channels):
        raise ImageConversionError(
            f"{encoding} needs shape (H, W{'' if channels == 1 else f', {channels}'}), got {array_.shape}"
        )
    if array_.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs dtype {dtype}, got {array_.dtype}")
    height, width = array_.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"cannot encode an empty image of shape {array_.shape}")
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    payload = np.ascontiguousarray(array_).tobytes()
    return _message(
        msg_type,
        header,
        payload,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(_HOST_IS_BIGENDIAN),
        step=width * dtype.itemsize * channels,
    )


def numpy_to_compressed(
    array_: np.ndarray,
    fmt: str,
    msg_type: type,
    header: Any = None,
    *,
    encoding: str | None = None,
    jpeg_quality: int = 95,
) -> Any:
    """Array → sensor_msgs/CompressedImage of class ``msg_type``, with image_transport's format string.

    ``fmt`` is ``'jpeg'``, ``'png'`` or ``'compressedDepth'``.
    - jpeg/png: ``(H, W, 3)`` uint8 in ``encoding`` order (default ``'rgb8'``; ``'bgr8'`` also),
      ``(H, W)`` uint8 mono8, or (png only) ``(H, W)`` uint16 mono16/16UC1. The file holds BGR, as
      image_transport's compressed plugin writes it: format ``"rgb8; jpeg compressed bgr8"``.
    - compressedDepth: ``(H, W)`` uint16 millimetres (16UC1) or float32 metres (32FC1, stored with
      compressed_depth_image_transport's default inverse-depth quantisation, depth_max 10 m).
    """
    array_ = np.asarray(array_)
    if array_.ndim < 2 or array_.shape[0] == 0 or array_.shape[1] == 0:
        raise ImageConversionError(f"cannot compress an image of shape {array_.shape}")
    if fmt == "compressedDepth":
        payload, fmt_string = _encode_compressed_depth(array_)
    elif fmt in ("jpeg", "png"):
        payload, fmt_string = _encode_compressed_image(array_, fmt, encoding, jpeg_quality)
    else:
        raise ImageConversionError(f"unknown compressed format {fmt!r} (jpeg, png or compressedDepth)")
    if _is_rosbags_type(msg_type):
        header = header if header is not None else _default_header(msg_type)
        return msg_type(header=header, format=fmt_string, data=np.frombuffer(payload, dtype=np.uint8))
    msg = msg_type(format=fmt_string) if header is None else msg_type(header=header, format=fmt_string)
    msg.data = array.array("B", payload)
    return msg


def _encode_compressed_image(
    array_: np.ndarray, fmt: str, encoding: str | None, jpeg_quality: int
) -> tuple[bytes, str]:
    if array_.ndim == 3 and array_.shape[2] == 3 and array_.dtype == np.uint8:
        encoding = encoding or "rgb8"
        if encoding not in ("rgb8", "bgr8"):
            raise ImageConversionError(f"3-channel compressed input must be rgb8 or bgr8, not {encoding!r}")
        bgr = cv2.cvtColor(array_, cv2.COLOR_RGB2BGR) if encoding == "rgb8" else array_
        stored = "bgr8"
    elif array_.ndim == 2 and array_.dtype == np.uint8:
        encoding, bgr, stored = encoding or "mono8", array_, "mono8"
    elif array_.ndim == 2 and array_.dtype == np.uint16 and fmt == "png":
        encoding, bgr, stored = encoding or "mono16", array_, "mono16"
    else:
        raise ImageConversionError(
            f"cannot {fmt}-compress an array of shape {array_.shape} and dtype {array_.dtype}"
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", bgr, params)
    if not ok:
        raise ImageConversionError(f"OpenCV failed to {fmt}-encode an array of shape {array_.shape}")
    return encoded.tobytes(), f"{encoding}; {fmt} compressed {stored}"


def _encode_compressed_depth(array_: np.ndarray) -> tuple[bytes, str]:
    if array_.ndim != 2:
        raise ImageConversionError(f"compressedDepth needs an (H, W) array, got shape {array_.shape}")
    if array_.dtype == np.uint16:
        stored, encoding, quant_a, quant_b = array_, "16UC1", 0.0, 0.0
    elif array_.dtype == np.float32:
        q = _DEFAULT_DEPTH_QUANTIZATION
        quant_a = q * (q + 1.0)
        quant_b = 1.0 - quant_a / _DEFAULT_DEPTH_MAX_M
        valid = np.isfinite(array_) & (array_ > 0)
        inverse = np.zeros(array_.shape, dtype=np.float64)
        inverse[valid] = quant_a / array_[valid].astype(np.float64) + quant_b
        # As the C++ plugin: values that do not fit 1..65535 (closer than ~0.15 m or past depth_max)
        # are stored as 0, i.e. no return.
        inverse[(inverse < 1) | (inverse > np.iinfo(np.uint16).max)] = 0
        stored, encoding = inverse.astype(np.uint16), "32FC1"
    else:
        raise ImageConversionError(f"compressedDepth needs uint16 mm or float32 m, got {array_.dtype}")
    ok, encoded = cv2.imencode(".png", stored)
    if not ok:
        raise ImageConversionError("OpenCV failed to PNG-encode the depth image")
    header = _COMPRESSED_DEPTH_HEADER.pack(0, quant_a, quant_b)
    return header + encoded.tobytes(), f"{encoding}; compressedDepth png"
