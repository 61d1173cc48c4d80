"""A deliberately minimal WebSocket client over a plain socket, for what real clients refuse to
do: unmasked frames, invalid UTF-8, never answering pings, reading nothing at all."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
from typing import Optional


class RawClient:
    def __init__(
        self,
        port: int,
        path: str = "/",
        headers: Optional[dict[str, str]] = None,
        rcvbuf: Optional[int] = None,
        tls: Optional[ssl.SSLContext] = None,
    ):
        if rcvbuf is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        else:
            # Set before connecting, so that the window the handshake offers is small too.
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(10)
            self.sock.connect(("127.0.0.1", port))
        if tls is not None:
            # Strict about the end: a server that cuts TLS short (no close_notify) raises
            # ssl.SSLEOFError in `recv` instead of looking like a clean end.
            self.sock = tls.wrap_socket(
                self.sock, server_hostname="127.0.0.1", suppress_ragged_eofs=False
            )
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    def handshake(self, extra: bytes = b"") -> str:
        """Send the upgrade request (plus ``extra`` bytes in the same write); return the
        response head."""
        self.sock.sendall(self.request + extra)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head.decode()

    @staticmethod
    def frame(
        opcode: int, payload: bytes, mask: bool = True, fin: bool = True, rsv1: bool = False
    ) -> bytes:
        head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
        n = len(payload)
        bit = 0x80 if mask else 0
        if n < 126:
            head += bytes([bit | n])
        elif n < 1 << 16:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def send(self, opcode: int, payload: bytes, mask: bool = True) -> None:
        self.sock.sendall(self.frame(opcode, payload, mask))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the socket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        first, payload = self.recv_raw()
        return first & 0x0F, payload

    def recv_raw(self) -> tuple[int, bytes]:
        """The next frame's first byte (FIN, RSV bits, opcode) and payload."""
        b1, b2 = self._read(2)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return b1, self._read(n)

    def recv_close(self) -> tuple[int, str]:
        """Skip frames until a Close; return its code and reason."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode()

    def at_eof(self) -> bool:
        """True once the server has closed the TCP connection."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()


def http_request(port: int, raw: bytes) -> tuple[int, str]:
    """Send a raw HTTP request; return the status and the whole response text."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    text = data.decode(errors="replace")
    return int(text.split(" ", 2)[1]), text
