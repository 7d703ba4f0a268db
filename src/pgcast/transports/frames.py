"""Server-side WebSocket frame encoding (RFC 6455), for pre-encoded fan-out.

Server-to-client frames are never masked, so a text frame is a 2-10 byte header
followed by the payload. The gateway encodes a change once and hands the same
bytes to every matching connection; each connection then writes all of its pending
frames with one system call.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def text_frame_header(length: int, first: int = _FIN_TEXT) -> bytes:
    """The header of an unmasked, final text frame carrying ``length`` payload bytes."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def binary_frame(payload: bytes) -> bytes:
    """A complete unmasked, final binary frame (the Supabase endpoint's broadcasts)."""
    return text_frame_header(len(payload), _FIN_BINARY) + payload


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked, final text frame carrying ``payload`` (UTF-8 JSON)."""
    return text_frame_header(len(payload)) + payload
