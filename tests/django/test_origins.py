"""Under Django, WebSocket handshakes from other sites are refused as Django refuses their
requests: the allowed origins follow ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def opens(server, origin: str) -> bool:
    try:
        with connect(f"ws://127.0.0.1:{server.port}/echo", origin=origin):
            return True
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False


def test_origins_follow_allowed_hosts_and_csrf_trusted_origins(runws, settings):
    settings.ALLOWED_HOSTS = ["chat.example.com", ".example.org", "127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://admin.example.net"]
    server = runws()
    assert opens(server, "https://chat.example.com")
    assert opens(server, "http://example.org")
    assert opens(server, "https://rooms.example.org")
    assert opens(server, "https://admin.example.net")
    assert not opens(server, "http://admin.example.net")  # a trusted origin names its scheme
    assert not opens(server, "https://evil.example.com")
    assert not opens(server, "https://attacker.test")


def test_a_wildcard_allowed_host_checks_nothing(runws, settings):
    settings.ALLOWED_HOSTS = ["*"]
    server = runws()
    assert opens(server, "https://attacker.test")


@pytest.mark.parametrize("origin", ["http://localhost:8000", "http://127.0.0.1:8000"])
def test_debug_without_allowed_hosts_allows_local_pages(runws, settings, origin):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = []
    server = runws()
    assert opens(server, origin)
    assert not opens(server, "https://attacker.test")
