"""core.app.join_link: the address the room's phones open, from the one the presenter's browser uses."""

import pytest

from core.app.join_link import for_the_room, join_url, network_address, only_this_machine, qr_png, short_url


def test_the_join_address_keeps_host_port_and_prefix():
    assert join_url("http://10.0.0.5:8501/present?slide=3") == "http://10.0.0.5:8501/join"
    assert join_url("https://example.org/apps/little-data/present") == "https://example.org/apps/little-data/join"
    assert short_url("http://10.0.0.5:8501/join") == "10.0.0.5:8501/join"
    with pytest.raises(ValueError, match="absolute"):
        join_url("/present")
    assert qr_png("http://10.0.0.5:8501/join").startswith(b"\x89PNG")


@pytest.mark.parametrize("url, local", [
    ("http://localhost:8501/join", True), ("http://127.0.0.1:8501/join", True), ("http://[::1]:8501/join", True),
    ("http://0.0.0.0:8501/join", True), ("http://10.0.0.5:8501/join", False), ("https://example.org/join", False)])
def test_a_loopback_address_is_one_only_this_machine_can_open(url, local):
    assert only_this_machine(url) is local


def test_a_presenter_at_localhost_gets_a_code_the_room_can_open():
    """Scanned, 'localhost' names the phone itself: the code carries the machine's network address."""
    assert for_the_room("http://localhost:8501/join", "192.168.1.20") == "http://192.168.1.20:8501/join"
    assert for_the_room("http://10.0.0.5:8501/join", "192.168.1.20") == "http://10.0.0.5:8501/join"  # already reachable
    assert for_the_room("http://localhost:8501/join", None) == "http://localhost:8501/join"  # no network to offer
    address = network_address()
    assert address is None or not only_this_machine(f"http://{address}:8501/")
