"""A decompression bomb: a PNG of 65 bytes that declares ``width`` x ``height`` pixels (1-bit gray, no data).

Pillow refuses to open one beyond twice ``PIL.Image.MAX_IMAGE_PIXELS`` and warns beyond once; nothing here
ever decodes it, so it costs no memory."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel, gray
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b""))
                           + _chunk(b"IEND", b""))
    return Path(path)
