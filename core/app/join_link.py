"""The address the audience opens, and its QR code: built from the address the presenter's browser uses.

The presenter's browser knows how the room reaches the server (a LAN address, a tunnel, a
hostname): `join_url` keeps its scheme, host and port and swaps the page for `join`. The QR code is
drawn by segno (BSD licence), a well-kept encoder, not ours.
"""

from __future__ import annotations

import io
import ipaddress
import socket
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


def only_this_machine(url: str) -> bool:
    """Whether `url` names this machine by a loopback name ('localhost', 127.0.0.1, ::1), which a phone
    scanning the code would take for itself."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def network_address() -> str | None:
    """This machine's address on its network (the one its default route leaves by), or None without one.

    A UDP socket "connected" to an outside address sends nothing: the kernel only picks the interface."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def for_the_room(url: str, address: str | None) -> str:
    """`url` with a loopback host replaced by this machine's network `address` (the port kept), so the
    code opened from the presenter's own browser at localhost still works on the room's phones."""
    if address is None or not only_this_machine(url):
        return url
    parts = urlsplit(url)
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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
