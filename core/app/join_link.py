"""The address the audience opens, and its QR code: built from the address the presenter's browser uses.

The presenter's browser knows how the room reaches the server (a LAN address, a tunnel, a
hostname): `join_url` keeps its scheme, host and port and swaps the page for `join`. The QR code is
drawn by segno (BSD licence), a well-kept encoder, not ours.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit, urlunsplit

JOIN_PATH = "join"


def join_url(page_url: str) -> str:
    """'http://10.0.0.5:8501/present?slide=3' -> 'http://10.0.0.5:8501/join' (a path prefix is kept)."""
    parts = urlsplit(page_url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"Not an absolute address: {page_url!r}")
    segments = [s for s in parts.path.split("/") if s]
    prefix = segments[:-1] if segments else []  # a server behind a path prefix (/apps/little-data/present)
    return urlunsplit((parts.scheme, parts.netloc, "/".join(["", *prefix, JOIN_PATH]), "", ""))


def short_url(url: str) -> str:
    """What to read out or type: the address without its scheme ('10.0.0.5:8501/join')."""
    parts = urlsplit(url)
    return parts.netloc + parts.path


def qr_png(url: str, scale: int = 12) -> bytes:
    """The QR code of `url` as PNG bytes (error correction M, a quiet zone of 2 modules)."""
    import segno

    buffer = io.BytesIO()
    segno.make(url, error="m", micro=False).save(buffer, kind="png", scale=scale, border=2)
    return buffer.getvalue()
