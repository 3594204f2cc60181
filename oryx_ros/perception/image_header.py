"""Size of a compressed image read from its header, before anything is decoded.

OpenCV's ``imdecode`` allocates the full output image from the header and only then decodes, so a
629-byte JPEG that claims 16384x16384 costs gigabytes. The image codec reads the header here first
and refuses what is too large. The format is recognised by the same signatures OpenCV's decoders
check (imgcodecs' ``checkSignature``), so whatever OpenCV would decode has been sized; a payload no
signature matches is refused (OpenCV would not decode it either).

Where Pillow reads a format's header without allocating pixels or inflating anything it does the
parsing (JPEG SOF, BMP, PBM/PGM/PPM, Sun raster, TIFF's first IFD, AVIF through libavif's parser).
The rest are parsed here, each a few fixed fields: PNG (IHDR; Pillow would inflate text chunks
first), GIF (screen and first frame; Pillow allocates a disposal buffer of the frame's size), WebP
(VP8/VP8L/VP8X; Pillow's decoder allocates the canvas), JPEG 2000 (the codestream's SIZ, also inside
a JP2, since OpenJPEG sizes from it), and the formats Pillow does not read: PFM (colour), PAM and
Radiance HDR.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import Final, Literal

from PIL import (
    BmpImagePlugin,
    ImageFile,
    JpegImagePlugin,
    PpmImagePlugin,
    SunImagePlugin,
    TiffImagePlugin,
)

try:  # Pillow >= 11.2 (a distribution's older Pillow has none: AVIF is then refused, not decoded unsized)
    from PIL import AvifImagePlugin
except ImportError:  # pragma: no cover - depends on the installed Pillow
    AvifImagePlugin = None

__all__ = ["ImageHeader", "ImageHeaderError", "read_image_header"]

SampleType = Literal["uint", "int", "float"]

# Most bytes a text header (PNM, PFM, PAM, HDR) may take before it counts as corrupt.
_MAX_TEXT_HEADER: Final = 64 * 1024
# deflate codes at best 258 bytes in 2 bits (a length and a distance code of 1 bit each).
_DEFLATE_MAX_RATIO: Final = 1032
_PNG_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_TIFF_SAMPLE_TYPES: Final[dict[int, SampleType]] = {1: "uint", 2: "int", 3: "float"}
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SIGNATURE: Final = b"\xff\x4f\xff\x51"
_HDR_SIZE_RE: Final = re.compile(rb"^\s*([+-][XY])\s+(\d+)\s+([+-][XY])\s+(\d+)\s*$")


class ImageHeaderError(ValueError):
    """A header that cannot be read. ``reason``: ``unknown_format`` or ``corrupt``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason through pickling (multiprocessing, logging handlers)
        return type(self), (str(self), self.reason)


@dataclass(frozen=True)
class ImageHeader:
    """What a compressed image's header says: format, size, and sample layout where it states one."""

    format: str
    width: int
    height: int
    channels: int | None = None
    bits_per_sample: int | None = None
    sample_type: SampleType = "uint"
    # The fewest bytes a file of this size can have (0: no useful bound): a shorter one is truncated, and
    # refusing it spares the full-size allocation the decoder makes before it finds out.
    min_data_bytes: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_image_header(data: bytes) -> ImageHeader:
    """The header of the image in ``data``, or ImageHeaderError. Reads only header bytes."""
    image_format = _sniff(data)
    if image_format is None:
        raise ImageHeaderError(f"cannot decode: no format OpenCV reads starts with {data[:8]!r}",
                               "unknown_format")
    try:
        header = _READERS[image_format](data)
    except ImageHeaderError:
        raise
    except Exception as err:  # any failure to parse outside input is a corrupt header
        raise ImageHeaderError(f"{image_format} header is unreadable: {err}", "corrupt") from err
    if header.width <= 0 or header.height <= 0:
        raise ImageHeaderError(f"{image_format} header gives size {header.width}x{header.height}", "corrupt")
    return header


def _sniff(data: bytes) -> str | None:
    """The OpenCV decoder that would take ``data`` (its signature test), None if none would."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith((_JP2_SIGNATURE, _J2K_SIGNATURE)):
        return "jpeg2000"
    if data.startswith(b"\x59\xa6\x6a\x95"):
        return "sun"
    if data[4:8] == b"ftyp":  # any ISO-BMFF file: OpenCV's AVIF decoder checks the brands
        return "avif"
    if data.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if len(data) >= 3 and data[:1] == b"P" and data[2:3].isspace():
        return {b"1": "pnm", b"2": "pnm", b"3": "pnm", b"4": "pnm", b"5": "pnm", b"6": "pnm", b"f": "pfm",
                b"F": "pfm", b"7": "pam"}.get(data[1:2])
    return None


# --- Pillow ----------------------------------------------------------------------------------------


def _pillow(plugin: type[ImageFile.ImageFile], data: bytes) -> ImageFile.ImageFile:
    """Pillow's plugin parses the header only; its class is used directly rather than Image.open so
    that Pillow's own decompression-bomb check (a warning, then an error) does not fire: the limit is
    the caller's."""
    return plugin(io.BytesIO(data))


def _read_jpeg(data: bytes) -> ImageHeader:
    image = _pillow(JpegImagePlugin.JpegImageFile, data)  # refuses other than 8 bits and 1/3/4 layers
    return ImageHeader("jpeg", *image.size, channels=image.layers, bits_per_sample=8)


def _read_with_pillow(image_format: str, plugin: type[ImageFile.ImageFile]):
    def read(data: bytes) -> ImageHeader:
        image = _pillow(plugin, data)
        return ImageHeader(image_format, *image.size)

    return read


def _read_avif(data: bytes) -> ImageHeader:
    if AvifImagePlugin is None or not AvifImagePlugin.SUPPORTED:
        raise ImageHeaderError("AVIF header: this Pillow has no AVIF support", "corrupt")
    image = _pillow(AvifImagePlugin.AvifImageFile, data)
    return ImageHeader("avif", *image.size)


def _read_tiff(data: bytes) -> ImageHeader:
    # Only the first IFD (the image OpenCV decodes); TiffImageFile would also refuse modes OpenCV reads.
    bigtiff = data[2] == 43
    ifd = TiffImagePlugin.ImageFileDirectory_v2(data[: 16 if bigtiff else 8])
    fp = io.BytesIO(data)
    fp.seek(ifd.next)
    ifd.load(fp)
    width, height = int(ifd[256]), int(ifd[257])
    bits = ifd.get(258, (1,))
    bits_per_sample = max(bits) if isinstance(bits, tuple) else int(bits)
    sample_format = ifd.get(339, (1,))
    sample_format = max(sample_format) if isinstance(sample_format, tuple) else int(sample_format)
    return ImageHeader("tiff", width, height, channels=int(ifd.get(277, 1)), bits_per_sample=bits_per_sample,
                       sample_type=_TIFF_SAMPLE_TYPES.get(sample_format, "int"))


# --- parsed here -----------------------------------------------------------------------------------


def _read_png(data: bytes) -> ImageHeader:
    # IHDR is the first chunk by the specification (libpng refuses anything else).
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageHeaderError("PNG does not start with an IHDR chunk", "corrupt")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None:
        raise ImageHeaderError(f"PNG colour type {colour_type} does not exist", "corrupt")
    # The rows inflate from the IDAT chunks, which are part of the payload, at most at deflate's best ratio.
    raw_bytes = height * ((width * channels * bit_depth + 7) // 8)
    return ImageHeader("png", width, height, channels=channels, bits_per_sample=bit_depth,
                       min_data_bytes=-(-raw_bytes // _DEFLATE_MAX_RATIO))


def _read_gif(data: bytes) -> ImageHeader:
    # Logical screen, then the first image descriptor: a frame may reach past the screen.
    width, height, flags = struct.unpack("<HHB", data[6:11])
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while at < len(data):
        block = data[at]
        if block == 0x21:  # extension: label, then sub-blocks until a zero length
            at += 2
            while data[at]:
                at += data[at] + 1
            at += 1
        elif block == 0x2C:
            left, top, frame_width, frame_height = struct.unpack("<HHHH", data[at + 1 : at + 9])
            return ImageHeader("gif", max(width, left + frame_width), max(height, top + frame_height))
        else:
            break
    raise ImageHeaderError("GIF has no image descriptor", "corrupt")


def _read_webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP VP8 frame has no start code", "corrupt")
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        if data[20] != 0x2F:
            raise ImageHeaderError("WebP VP8L has no signature byte", "corrupt")
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas, which every frame must fit
        return ImageHeader("webp", int.from_bytes(data[24:27], "little") + 1,
                           int.from_bytes(data[27:30], "little") + 1)
    raise ImageHeaderError(f"WebP with first chunk {chunk!r} (or too short)", "corrupt")


def _j2k_codestream_size(data: bytes, at: int) -> ImageHeader:
    """SIZ right after SOC: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz."""
    if data[at : at + 4] != _J2K_SIGNATURE:
        raise ImageHeaderError("JPEG 2000 codestream does not start with SOC, SIZ", "corrupt")
    _, _, xsiz, ysiz, xosiz, yosiz, _, _, _, _, csiz = struct.unpack(">HHIIIIIIIIH", data[at + 4 : at + 42])
    return ImageHeader("jpeg2000", xsiz - xosiz, ysiz - yosiz, channels=csiz)


def _read_jpeg2000(data: bytes) -> ImageHeader:
    if data.startswith(_J2K_SIGNATURE):
        return _j2k_codestream_size(data, 0)
    at = 0
    while at + 8 <= len(data):  # JP2 boxes: the codestream is in 'jp2c'
        length, box = struct.unpack(">I4s", data[at : at + 8])
        header_len = 8
        if length == 1:
            length, header_len = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        if box == b"jp2c":
            return _j2k_codestream_size(data, at + header_len)
        if length < header_len:  # 0 = "to the end": the last box, and it was not the codestream
            break
        at += length
    raise ImageHeaderError("JP2 file has no codestream box", "corrupt")


def _text_header(data: bytes, what: str) -> bytes:
    head = data[:_MAX_TEXT_HEADER]
    if len(data) > len(head) and b"\n" not in head:
        raise ImageHeaderError(f"{what} header longer than {_MAX_TEXT_HEADER} bytes", "corrupt")
    return head


def _read_pnm(data: bytes) -> ImageHeader:
    image = _pillow(PpmImagePlugin.PpmImageFile, data)
    return ImageHeader("pnm", *image.size)


def _read_pfm(data: bytes) -> ImageHeader:
    tokens = _text_header(data, "PFM").split(maxsplit=4)  # PF|Pf, width, height, scale, data
    if len(tokens) < 4:
        raise ImageHeaderError("PFM header has fewer than 4 fields", "corrupt")
    return ImageHeader("pfm", int(tokens[1]), int(tokens[2]), channels=3 if tokens[0] == b"PF" else 1,
                       bits_per_sample=32, sample_type="float")


def _read_pam(data: bytes) -> ImageHeader:
    fields: dict[bytes, bytes] = {}
    for line in _text_header(data, "PAM").split(b"\n")[1:]:
        line = line.split(b"#", 1)[0].strip()
        if line == b"ENDHDR":
            break
        if line:
            key, _, value = line.partition(b" ")
            fields[key] = value.strip()
    else:
        raise ImageHeaderError("PAM header has no ENDHDR", "corrupt")
    maxval = int(fields.get(b"MAXVAL", b"255"))
    return ImageHeader("pam", int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), channels=int(fields[b"DEPTH"]),
                       bits_per_sample=16 if maxval > 255 else 8)


def _read_hdr(data: bytes) -> ImageHeader:
    # Header lines, a blank line, then the resolution line "-Y <height> +X <width>" (or another order).
    lines = _text_header(data, "HDR").split(b"\n")
    try:
        resolution = lines[lines.index(b"") + 1]
    except (ValueError, IndexError):
        raise ImageHeaderError("HDR header has no resolution line", "corrupt") from None
    match = _HDR_SIZE_RE.match(resolution)
    if match is None or {match.group(1)[1:], match.group(3)[1:]} != {b"X", b"Y"}:
        raise ImageHeaderError(f"HDR resolution line {resolution[:40]!r} is not '-Y h +X w'", "corrupt")
    sizes = {match.group(1)[1:]: int(match.group(2)), match.group(3)[1:]: int(match.group(4))}
    return ImageHeader("hdr", sizes[b"X"], sizes[b"Y"], channels=3, bits_per_sample=32, sample_type="float")


_READERS: Final = {
    "jpeg": _read_jpeg,
    "png": _read_png,
    "webp": _read_webp,
    "tiff": _read_tiff,
    "bmp": _read_with_pillow("bmp", BmpImagePlugin.BmpImageFile),
    "gif": _read_gif,
    "jpeg2000": _read_jpeg2000,
    "sun": _read_with_pillow("sun", SunImagePlugin.SunImageFile),
    "avif": _read_avif,
    "hdr": _read_hdr,
    "pnm": _read_pnm,
    "pfm": _read_pfm,
    "pam": _read_pam,
}
