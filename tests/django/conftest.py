"""A roomcast server for the example project on a free port, stopped after each test."""

from __future__ import annotations

import importlib.util
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import trustme

import roomcast
from roomcast.django.server import build

# The suite's waiting helpers (tests/conftest.py), shared rather than copied.
_spec = importlib.util.spec_from_file_location(
    "_suite", Path(__file__).parent.parent / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
wait_for = _suite.wait_for
log_lines = _suite.log_lines


@pytest.fixture
def runws(transactional_db: Any) -> Iterator[Callable[..., roomcast.RunningServer]]:
    """``runws()`` serves the project as ``manage.py runws`` does, on a free port (the
    settings are read then: change them with pytest-django's ``settings`` first).
    ``runws(app=server)`` serves that roomcast app instead of ``ROOMCAST_APP``;
    ``runws(tls=(certfile, keyfile))`` serves TLS, as ``--ssl-certfile``/``--ssl-keyfile``."""
    started: list[roomcast.RunningServer] = []

    def start(
        *, app: Optional[roomcast.Server] = None, tls: Optional[tuple[Path, Path]] = None
    ) -> roomcast.RunningServer:
        project = build(app=app)
        # The same ROOMCAST_APP comes back from every build: no test may leave TLS on in it.
        project.use_tls(*(tls or (None, None)))
        server = project.start(port=0)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=2.0)


@pytest.fixture
def session_cookie(transactional_db: Any) -> Callable[[str], str]:
    """``session_cookie("ann")`` creates user ann, logs her in, returns her Cookie header."""
    from django.contrib.auth.models import User
    from django.test import Client

    def login(username: str) -> str:
        User.objects.create_user(username, password="pw")
        client = Client()
        assert client.login(username=username, password="pw")
        return f"sessionid={client.cookies['sessionid'].value}"

    return login


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[tuple[Path, Path], ssl.SSLContext]:
    """A certificate for 127.0.0.1 and its key, and a client context that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return (certfile, keyfile), ctx
