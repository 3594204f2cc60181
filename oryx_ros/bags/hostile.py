"""Hostile image payloads for tests and benchmarks: what a broken or malicious camera driver could send.

Each is small and built on the spot; the image codec must refuse every one before it costs memory.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

BOMB_SIDE = 16384


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid 8x8 JPEG whose SOF claims ``side`` x ``side`` (629 bytes; OpenCV would allocate side² x 3)."""
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    data[at + 5 : at + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """An 8x8 PNG whose IHDR claims ``side`` x ``side``, with a correct CRC: only the size is a lie."""
    data = bytearray(cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = side.to_bytes(4, "big") * 2
    data[ihdr + 17 : ihdr + 21] = zlib.crc32(bytes(data[ihdr : ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


def corrupt_png(width: int = 32, height: int = 24) -> bytes:
    """A PNG whose header is fine and whose compressed rows are overwritten."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    data = bytearray(cv2.imencode(".png", pixels)[1])
    idat = data.index(b"IDAT") + 4
    data[idat : len(data) - 12] = b"\xa5" * (len(data) - 12 - idat)
    return bytes(data)


def pfm(width: int = 32, height: int = 24) -> bytes:
    """A PFM: float colour, which OpenCV decodes as float32 (not an 8-bit colour image)."""
    return cv2.imencode(".pfm", np.full((height, width, 3), 0.5, np.float32))[1].tobytes()
