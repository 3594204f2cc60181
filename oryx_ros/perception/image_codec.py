"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, for rclpy and rosbags messages alike.

Messages are duck-typed (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data`` for
Image; ``format``, ``data`` for CompressedImage), so this module imports no ROS client library. Raw images
are decoded by rosbags-image (``image_to_cvimage``) after this module has checked the message, because
rosbags-image trusts ``step`` and the data length; compressed images are decoded with OpenCV directly,
because rosbags-image reads them with ``IMREAD_ANYCOLOR``, which truncates 16-bit PNG depth to 8 bits.

Outputs follow oryx_ros.perception.frames: colour is RGB ``uint8`` ``(H, W, 3)``, depth is ``float32``
metres ``(H, W)`` with NaN where the sensor gave no return (never <= 0 or infinite). Anything else,
whatever the payload, is an ImageConversionError with a ``reason`` (IMAGE_ERROR_REASONS), so a caller
counts rejections by cause; no other exception leaves the public conversions.

Decoding is bounded: an image larger than ``max_pixels`` (default MAX_DECODE_PIXELS) is refused before
anything is allocated, for raw images from width x height and for compressed ones from the header
(oryx_ros.perception.image_header), which covers every format OpenCV decodes. Float colour (PFM, HDR,
float TIFF) is refused, not passed on as float32 colour.
"""

from __future__ import annotations

import array
import functools
import struct
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.image import image_to_cvimage
from rosbags.image.image import ENC_RE, ENCODINGMAP, ImageError

from oryx_ros.perception.image_header import ImageHeader, ImageHeaderError, read_image_header

__all__ = [
    "COLOUR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "IMAGE_ERROR_REASONS",
    "MAX_DECODE_PIXELS",
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
# Largest image decoded by default: 4096 x 2304 (9.4 Mpx) holds UHD 3840x2160 and DCI 4K 4096x2160 with
# room to spare, and bounds one decode at 28 MB of uint8 RGB (75 MB for 16-bit RGBA, the worst OpenCV
# returns for a format to_rgb accepts).
MAX_DECODE_PIXELS: Final = 4096 * 2304

# ImageConversionError.reason values.
IMAGE_ERROR_REASONS: Final = frozenset({
    "malformed",  # not an Image/CompressedImage, or a field out of its range (is_bigendian 2)
    "empty",  # zero width/height or no data
    "size_mismatch",  # step / data length / image sizes that do not agree
    "too_many_pixels",  # larger than max_pixels (from the header, before decoding)
    "unknown_format",  # compressed data no OpenCV decoder recognises
    "corrupt",  # a recognised format whose header or data cannot be decoded
    "truncated",  # shorter than its header's size requires
    "unsupported_encoding",  # a raw encoding / compressed format this module does not convert
    "unsupported_dtype",  # signed or > 16-bit integer samples
    "unsupported_channels",  # not 1, 3 or 4 channels (1 for depth)
    "float_colour",  # float samples (PFM, HDR, float TIFF) offered as colour
    "wrong_kind",  # a depth image to to_rgb or a colour image to to_depth_m
    "out_of_memory",  # the decoder could not allocate
    "bad_array",  # numpy -> message: an array that does not fit the requested encoding
})

_F = TypeVar("_F", bound=Callable[..., Any])


class ImageConversionError(ValueError):
    """A message that cannot be converted; ``reason`` (one of IMAGE_ERROR_REASONS) says why."""

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason through pickling
        return type(self), (str(self), self.reason)


def _typed_errors(convert: _F) -> _F:
    """Turn whatever a decoder raises on hostile data (cv2.error, numpy's ValueError, MemoryError, ...)
    into ImageConversionError, so callers need to handle one exception type."""

    @functools.wraps(convert)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return convert(*args, **kwargs)
        except ImageConversionError:
            raise
        except MemoryError as err:
            raise ImageConversionError(f"out of memory converting the image: {err}", "out_of_memory") from err
        except (cv2.error, ImageError, ValueError, TypeError, OverflowError, IndexError, KeyError,
                struct.error) as err:
            raise ImageConversionError(f"cannot convert the image: {type(err).__name__}: {err}", "corrupt") from err

    return wrapper  # type: ignore[return-value]


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageConversionError(
            f"{what} is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}",
            "too_many_pixels",
        )


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
            raise ImageConversionError(f"unsupported encoding {encoding!r} (planar YUV 4:2:0)",
                                       "unsupported_encoding")
        return bits // 8 * channels, dtype, channels
    match = ENC_RE.fullmatch(encoding)
    if match is None:
        raise ImageConversionError(f"unknown image encoding {encoding!r}", "unsupported_encoding")
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


def _checked_raw(msg: Any, max_pixels: int) -> _PackedImage:
    """Validate a raw Image (size, step, data length, endianness flag) and drop row padding."""
    for name in ("height", "width", "encoding", "is_bigendian", "step", "data"):
        if not hasattr(msg, name):
            raise ImageConversionError(f"not a sensor_msgs/Image: missing field {name!r}", "malformed")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{encoding} image has zero size ({width}x{height})", "empty")
    _check_pixels(width, height, max_pixels, f"{encoding} image")
    pixel_bytes, _, _ = _bytes_per_pixel(encoding)
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(f"{encoding} image has odd width {width} (4:2:2 pairs pixels)", "size_mismatch")
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding} image step {step} is less than width*bytes_per_pixel = {width}*{pixel_bytes}",
            "size_mismatch",
        )
    if int(msg.is_bigendian) not in (0, 1):
        raise ImageConversionError(f"is_bigendian must be 0 or 1, got {msg.is_bigendian!r}", "malformed")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageConversionError(
            f"{encoding} image data has {data.size} bytes, expected step*height = {step}*{height} = "
            f"{step * height}",
            "size_mismatch",
        )
    if step != row_bytes:
        data = np.ascontiguousarray(data.reshape(height, step)[:, :row_bytes]).reshape(-1)
    return _PackedImage(msg, data)


def _owned(image: np.ndarray) -> np.ndarray:
    """The array itself if it owns its memory, else a copy (never alias a message's buffer)."""
    return image if image.flags.owndata and image.flags.writeable else image.copy()


@_typed_errors
def image_to_numpy(msg: Any, *, max_pixels: int = MAX_DECODE_PIXELS) -> np.ndarray:
    """Raw Image → array in the message's own encoding and channel order, native byte order.

    Shape ``(H, W)`` for one channel, ``(H, W, C)`` otherwise (YUV 4:2:2 gives ``(H, W, 2)``).
    """
    packed = _checked_raw(msg, max_pixels)
    try:
        image = image_to_cvimage(packed)
    except (ImageError, ValueError, TypeError) as err:
        raise ImageConversionError(f"cannot read {packed.encoding} image: {err}", "corrupt") from err
    return _owned(image)


# --------------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage
# --------------------------------------------------------------------------------------------------


def _format_encoding(fmt: str) -> str:
    """The original encoding named before ';' in an image_transport format string ('' if none)."""
    head = fmt.split(";", 1)[0].strip()
    return head if ";" in fmt else ""


def _checked_header(buffer: npt.NDArray[np.uint8], what: str, max_pixels: int) -> ImageHeader:
    """The payload's header, refused when it is unreadable, too large or not an 8/16-bit image."""
    if buffer.size == 0:
        raise ImageConversionError(f"{what} has no data", "empty")
    try:
        header = read_image_header(buffer.tobytes())
    except ImageHeaderError as err:
        raise ImageConversionError(f"{what}: {err}", err.reason) from err
    _check_pixels(header.width, header.height, max_pixels, f"{what} ({header.format})")
    if buffer.size < header.min_data_bytes:
        raise ImageConversionError(
            f"{what}: a {header.width}x{header.height} {header.format} needs at least {header.min_data_bytes} "
            f"bytes, it has {buffer.size}",
            "truncated",
        )
    if header.channels is not None and header.channels > 4:
        raise ImageConversionError(f"{what}: {header.format} with {header.channels} channels",
                                   "unsupported_channels")
    return header


def _imdecode(payload: npt.NDArray[np.uint8] | bytes, what: str, max_pixels: int, *, colour: bool) -> np.ndarray:
    """Decode after the header passed: at most ``max_pixels``; float colour refused before decoding."""
    buffer = np.frombuffer(payload, dtype=np.uint8)
    header = _checked_header(buffer, what, max_pixels)
    if header.sample_type == "float":
        reason = "float_colour" if colour else "unsupported_dtype"
        raise ImageConversionError(f"{what}: {header.format} holds float samples (need 8/16-bit integers)", reason)
    if header.sample_type == "int" or (header.bits_per_sample or 0) > 16:
        raise ImageConversionError(
            f"{what}: {header.format} holds {header.sample_type}{header.bits_per_sample} samples "
            "(need 8/16-bit unsigned)",
            "unsupported_dtype",
        )
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageConversionError(f"{what}: OpenCV cannot decode {buffer.size} bytes of {header.format}", "corrupt")
    if image.shape[0] * image.shape[1] > header.pixels:  # the header said less than the decoder used
        raise ImageConversionError(
            f"{what}: {header.format} decoded to {image.shape[1]}x{image.shape[0]}, header says "
            f"{header.width}x{header.height}",
            "corrupt",
        )
    return image


def _checked_dtype(image: np.ndarray, what: str, *, colour: bool) -> np.ndarray:
    """``image`` if it is uint8/uint16, else the typed error (OpenCV returns e.g. int16 or float TIFFs)."""
    if image.dtype in (np.uint8, np.uint16):
        return image
    if image.dtype.kind == "f":
        reason = "float_colour" if colour else "unsupported_dtype"
        raise ImageConversionError(f"{what} decoded to {image.dtype} samples (need 8/16-bit integers)", reason)
    raise ImageConversionError(f"{what} decoded to {image.dtype} samples (need 8/16-bit unsigned)",
                               "unsupported_dtype")


def _decode_compressed_depth(msg: Any, max_pixels: int) -> npt.NDArray[np.float32]:
    """compressed_depth_image_transport payload (header + PNG) → float32 metres, NaN = no return."""
    fmt = str(msg.format)
    if "rvl" in fmt.lower():
        raise ImageConversionError(f"unsupported compressedDepth codec in format {fmt!r} (only png)",
                                   "unsupported_encoding")
    encoding = _format_encoding(fmt) or "16UC1"
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f"compressedDepth with unsupported encoding {encoding!r} in {fmt!r}",
                                   "unsupported_encoding")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size <= _COMPRESSED_DEPTH_HEADER.size:
        raise ImageConversionError(f"compressedDepth image has only {data.size} bytes (header is 12)", "truncated")
    _, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack(data[: _COMPRESSED_DEPTH_HEADER.size].tobytes())
    what = f"compressedDepth ({fmt!r})"
    stored = _checked_dtype(_imdecode(data[_COMPRESSED_DEPTH_HEADER.size :], what, max_pixels, colour=False),
                            what, colour=False)
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ImageConversionError(
            f"compressedDepth PNG must be 16-bit single channel, got {stored.dtype} of shape {stored.shape}",
            "unsupported_channels" if stored.ndim != 2 else "unsupported_dtype",
        )
    if encoding == "16UC1":
        return _mm_to_m(stored)
    if not (np.isfinite(quant_a) and np.isfinite(quant_b)):
        raise ImageConversionError(f"{what}: quantisation header ({quant_a}, {quant_b}) is not finite", "corrupt")
    depth_m = np.full(stored.shape, np.nan, dtype=np.float32)
    valid = stored != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth_m[valid] = np.float32(quant_a) / (stored[valid].astype(np.float32) - np.float32(quant_b))
    return _valid_depth(depth_m)  # the header comes with the data: its A and B may give 0, < 0 or inf


def _decode_compressed(msg: Any, max_pixels: int, *, colour: bool) -> np.ndarray:
    """CompressedImage → OpenCV array (BGR/BGRA/gray, 8- or 16-bit) as stored in the file."""
    if not hasattr(msg, "data"):
        raise ImageConversionError("not a sensor_msgs/CompressedImage: missing field 'data'", "malformed")
    what = f"compressed image ({str(msg.format)[:60]!r})"
    return _checked_dtype(_imdecode(msg.data, what, max_pixels, colour=colour), what, colour=colour)


# --------------------------------------------------------------------------------------------------
# Public conversions
# --------------------------------------------------------------------------------------------------


@_typed_errors
def to_rgb(msg: Any, *, max_pixels: int = MAX_DECODE_PIXELS) -> npt.NDArray[np.uint8]:
    """Image or CompressedImage → RGB ``uint8`` array ``(H, W, 3)`` (16-bit input scaled to 8-bit).

    Images of more than ``max_pixels`` are refused before decoding (reason ``too_many_pixels``).
    """
    if is_compressed(msg):
        if "compresseddepth" in str(msg.format).lower():
            raise ImageConversionError(f"{msg.format!r} is a depth image: use to_depth_m()", "wrong_kind")
        image = _decode_compressed(msg, max_pixels, colour=True)
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)  # 16 → 8 bit keeps the top byte
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(image.shape[2])
        if code is None:
            raise ImageConversionError(f"compressed image with {image.shape[2]} channels", "unsupported_channels")
        return cv2.cvtColor(image, code)

    packed = _checked_raw(msg, max_pixels)
    if packed.encoding not in COLOUR_ENCODINGS:
        is_depth = packed.encoding in DEPTH_ENCODINGS
        hint = " (a depth image: use to_depth_m())" if is_depth else ""
        raise ImageConversionError(f"cannot convert encoding {packed.encoding!r} to rgb8{hint}",
                                   "wrong_kind" if is_depth else "unsupported_encoding")
    try:
        image = image_to_cvimage(packed, "rgb8")
    except (ImageError, ValueError, TypeError, cv2.error) as err:
        raise ImageConversionError(f"cannot convert {packed.encoding} image to rgb8: {err}", "corrupt") from err
    return _owned(np.asarray(image, dtype=np.uint8))


def _mm_to_m(depth_mm: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    depth_m = depth_mm.astype(np.float32) / np.float32(_MM_PER_M)
    depth_m[depth_mm == 0] = np.nan  # 0 mm is "no return" in 16UC1 (REP 118)
    return depth_m


def _valid_depth(depth_m: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """NaN wherever a depth is not a usable 3D point: NaN, ±Inf, <= 0."""
    depth_m[~np.isfinite(depth_m) | (depth_m <= 0)] = np.nan
    return depth_m


@_typed_errors
def to_depth_m(msg: Any, *, max_pixels: int = MAX_DECODE_PIXELS) -> npt.NDArray[np.float32]:
    """Depth Image or CompressedImage → ``float32`` metres ``(H, W)``, NaN where there is no return.

    16UC1 (and mono16) is millimetres with 0 = no return; 32FC1 is metres, where NaN, ±Inf (REP 118's
    too-close / too-far) and values <= 0 all become NaN, since none of them is a usable 3D point.
    Compressed: compressed_depth_image_transport ("16UC1; compressedDepth png", "32FC1; compressedDepth
    png") and plain 16-bit PNG (or another 16-bit single-channel codec). Images of more than
    ``max_pixels`` are refused before decoding (reason ``too_many_pixels``).
    """
    if is_compressed(msg):
        if "compresseddepth" in str(msg.format).lower():
            return _decode_compressed_depth(msg, max_pixels)
        image = _decode_compressed(msg, max_pixels, colour=False)
        if image.dtype != np.uint16 or image.ndim != 2:
            raise ImageConversionError(
                f"compressed image {str(msg.format)[:60]!r} is not 16-bit single-channel depth ({image.dtype}, "
                f"shape {image.shape})",
                "wrong_kind",
            )
        return _mm_to_m(image)

    encoding = str(getattr(msg, "encoding", ""))
    if encoding not in (*DEPTH_ENCODINGS, "mono16"):
        raise ImageConversionError(f"encoding {encoding!r} is not depth (16UC1 mm or 32FC1 m)",
                                   "wrong_kind" if encoding in COLOUR_ENCODINGS else "unsupported_encoding")
    image = image_to_numpy(msg, max_pixels=max_pixels)
    if encoding == "32FC1":
        return _valid_depth(image.astype(np.float32, copy=False))
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
            f"{encoding} needs shape (H, W{'' if channels == 1 else f', {channels}'}), got {array_.shape}", "bad_array"
        )
    if array_.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs dtype {dtype}, got {array_.dtype}", "bad_array")
    height, width = array_.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"cannot encode an empty image of shape {array_.shape}", "bad_array")
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}", "bad_array")
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
        raise ImageConversionError(f"cannot compress an image of shape {array_.shape}", "bad_array")
    if fmt == "compressedDepth":
        payload, fmt_string = _encode_compressed_depth(array_)
    elif fmt in ("jpeg", "png"):
        payload, fmt_string = _encode_compressed_image(array_, fmt, encoding, jpeg_quality)
    else:
        raise ImageConversionError(f"unknown compressed format {fmt!r} (jpeg, png or compressedDepth)", "bad_array")
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
            raise ImageConversionError(f"3-channel compressed input must be rgb8 or bgr8, not {encoding!r}",
                                       "bad_array")
        bgr = cv2.cvtColor(array_, cv2.COLOR_RGB2BGR) if encoding == "rgb8" else array_
        stored = "bgr8"
    elif array_.ndim == 2 and array_.dtype == np.uint8:
        encoding, bgr, stored = encoding or "mono8", array_, "mono8"
    elif array_.ndim == 2 and array_.dtype == np.uint16 and fmt == "png":
        encoding, bgr, stored = encoding or "mono16", array_, "mono16"
    else:
        raise ImageConversionError(
            f"cannot {fmt}-compress an array of shape {array_.shape} and dtype {array_.dtype}", "bad_array"
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", bgr, params)
    if not ok:
        raise ImageConversionError(f"OpenCV failed to {fmt}-encode an array of shape {array_.shape}", "bad_array")
    return encoded.tobytes(), f"{encoding}; {fmt} compressed {stored}"


def _encode_compressed_depth(array_: np.ndarray) -> tuple[bytes, str]:
    if array_.ndim != 2:
        raise ImageConversionError(f"compressedDepth needs an (H, W) array, got shape {array_.shape}", "bad_array")
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
        raise ImageConversionError(f"compressedDepth needs uint16 mm or float32 m, got {array_.dtype}", "bad_array")
    ok, encoded = cv2.imencode(".png", stored)
    if not ok:
        raise ImageConversionError("OpenCV failed to PNG-encode the depth image", "bad_array")
    header = _COMPRESSED_DEPTH_HEADER.pack(0, quant_a, quant_b)
    return header + encoded.tobytes(), f"{encoding}; compressedDepth png"
