"""A minimal PNG encoder (8-bit greyscale or RGB), so reports need no imaging library."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(image) -> bytes:
    """PNG bytes of an image with values in [0, 1]: shape (H, W), (H, W, 1) or (H, W, 3).

    Raises
    ------
    ValueError
        For another shape, or non-finite values.
    """
    img = np.asarray(image, dtype="float64")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(
            "encode_png takes an (H, W), (H, W, 1) or (H, W, 3) image. "
            f"Received: shape={img.shape}"
        )
    if not np.all(np.isfinite(img)):
        raise ValueError("encode_png takes finite values. Received: NaN or inf in the image")
    pixels = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def png_data_uri(image) -> str:
    """``data:image/png;base64,...`` of :func:`encode_png`."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")
