"""Damage files the way disks and people do, for the artifact tests."""

from __future__ import annotations

import zipfile

__all__ = ["corrupt_member"]


def corrupt_member(path, member, how="crc"):
    """Damage one member's compressed data, the zip directory staying intact (the archive
    still opens and lists its members): "crc" flips bytes mid-stream (a valid stream with
    the wrong content: zipfile's CRC check), "inflate" makes the first deflate block header
    invalid (zlib.error while decompressing)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    if how == "inflate":
        raw[start] = 0xFF  # BTYPE = 11: reserved, "invalid block type"
    else:
        mid = start + info.compress_size // 2
        for i in range(mid, mid + 64):
            raw[i] ^= 0xA5
    path.write_bytes(bytes(raw))
