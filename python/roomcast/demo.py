"""The chat demo: the chat preset plus a page that uses it, on one port (``roomcast demo``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
import time
from importlib import resources
from typing import Any, Optional

from .presets import chat
from .presets.chat import static_file
from .server import Server

#: How long the token the demo puts in its page stays valid.
TOKEN_LIFETIME = 24 * 3600


def app(
    *, jwt_secret: Optional[str] = None, heartbeat_interval: float = 30.0, **settings: Any
) -> Server:
    """The chat preset (``roomcast.presets.chat``, in-memory offline store) serving the demo
    page at ``/``. With ``jwt_secret``, the page carries a token the demo signed with it, so
    the page authenticates the way a real app's would."""
    server = chat(jwt_secret=jwt_secret, heartbeat_interval=heartbeat_interval, **settings)
    token = mint_token(jwt_secret, "demo") if jwt_secret else ""
    folder = resources.files("roomcast").joinpath("static", "demo")
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") or not entry.is_file():
            continue
        body = static_file(f"demo/{name}")
        if name == "index.html":
            body = body.replace("{{ROOMCAST_TOKEN}}", token).replace(
                "{{ROOMCAST_HEARTBEAT_MS}}", str(round(heartbeat_interval * 1000))
            )
            server.page("/", body)
            continue
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        server.page(f"/{name}", body, kind)
    return server


def mint_token(secret: str, subject: str, lifetime: float = TOKEN_LIFETIME) -> str:
    """An HS256 JWT for ``subject`` expiring after ``lifetime`` seconds (demo use: a real
    application issues tokens from its login, with a JWT library)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": subject, "iat": int(time.time()), "exp": int(time.time() + lifetime)}
    payload = b64(json.dumps(claims).encode())
    signed = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"
