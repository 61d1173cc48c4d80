"""The soak's stayers (benches/soak.py): clients that stay connected in room `stay` through the
whole churn while one of them, the publisher, has the server broadcast numbered messages to
the room (`{"event":"pub","n":N}`, at --rate a second). Each stayer checks that it gets every
number exactly once, in order.

    python soak_stayers.py --port P [--stayers 50] [--rate 100] [--ca CA.pem]

Driven through stdin and stdout, one line each way: it prints `ready` once every stayer has a
numbered message; `census` is answered with the server's census (a JSON line); `stop` ends the
publishing, waits until every stayer has the last number (or --drain seconds), closes them
all with 1000 and prints the verdict as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import ssl
import struct
import sys
import time
from typing import Any, Optional

REQUEST = (
    "GET /stay?room=stay HTTP/1.1\r\nHost: {host}\r\nOrigin: https://soak.example\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
PROBLEMS_KEPT = 10


def client_frame(op: int, payload: bytes) -> bytes:
    """A masked frame with the all-zero mask: valid, and the payload goes out as it is."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class Stayer(asyncio.Protocol):
    """One stayer: parses the server's frames as they come and checks the numbers."""

    def __init__(self, index: int, host: str) -> None:
        self.index = index
        self.host = host
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.census: Optional[asyncio.Future[dict[str, Any]]] = None
        self.expected = 0  # the next number due
        self.received = 0
        self.lost = 0
        self.duplicated = 0
        self.leaving = False
        self.ended: Optional[str] = None  # why the connection ended, if it did
        self.problems: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REQUEST.format(host=self.host).encode())

    def send(self, op: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(op, payload))

    def problem(self, what: str) -> None:
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(what)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded.set_result(None)
        pos = self.frames(memoryview(self.buf))
        del self.buf[:pos]

    def frames(self, b: memoryview) -> int:
        """Handles every complete frame in ``b``; returns how many bytes they took."""
        pos = 0
        while len(b) - pos >= 2:
            op, n = b[pos] & 0x0F, b[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(b) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", b, pos + 2)[0], 4
            elif n == 127:
                if len(b) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", b, pos + 2)[0], 10
            if len(b) - pos < head + n:
                break
            self.frame(op, b[pos + head : pos + head + n])
            pos += head + n
        return pos

    def frame(self, op: int, payload: memoryview) -> None:
        if op == OP_TEXT and len(payload) > 8 and payload[0] == ord("n"):
            self.number(int(bytes(payload[1:9])))
        elif op == OP_TEXT and self.census is not None and not self.census.done():
            self.census.set_result(json.loads(bytes(payload)))
        elif op == OP_PING:
            self.send(OP_PONG, bytes(payload))
        elif op == OP_CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            if not self.leaving:
                self.ended = f"server sent Close {code}"
                self.problem(self.ended)
            if self.transport is not None:
                self.transport.close()

    def number(self, n: int) -> None:
        self.received += 1
        if n == self.expected:
            self.expected += 1
        elif n > self.expected:
            self.lost += n - self.expected
            self.problem(f"numbers {self.expected}..{n - 1} missing")
            self.expected = n + 1
        else:
            self.duplicated += 1
            self.problem(f"number {n} again (or late), after {self.expected - 1}")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"lost before the 101: {exc}"))
        if not self.leaving and self.ended is None:
            self.ended = f"connection lost: {exc}"
            self.problem(self.ended)


async def publish(pub: Stayer, rate: float, stop: asyncio.Event, sent: list[int]) -> None:
    """Number after number at ``rate`` a second, on a fixed schedule (no drift)."""
    step, due = 1.0 / rate, time.monotonic()
    while not stop.is_set() and pub.ended is None:
        pub.send(OP_TEXT, b'{"event":"pub","n":%d}' % sent[0])
        sent[0] += 1
        due += step
        delay = due - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass


async def census(stayers: list[Stayer]) -> dict[str, Any]:
    """The server's census, asked by a stayer still connected; an error if none answers."""
    asker = next((s for s in stayers if s.ended is None), None)
    if asker is None:
        return {"error": "no stayer is connected to ask"}
    asker.census = asyncio.get_running_loop().create_future()
    asker.send(OP_TEXT, b'{"event":"census"}')
    try:
        return await asyncio.wait_for(asker.census, 30)
    except asyncio.TimeoutError:
        return {"error": f"stayer {asker.index} got no census within 30 s"}


async def until(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stayers", type=int, default=50)
    p.add_argument("--rate", type=float, default=100.0, help="numbered messages a second")
    p.add_argument("--drain", type=float, default=30.0)
    p.add_argument("--ca", help="speak wss://, trusting only this CA (PEM)")
    a = p.parse_args()
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(cafile=a.ca) if a.ca else None
    stayers: list[Stayer] = []
    for i in range(a.stayers):
        _, s = await loop.create_connection(
            functools.partial(Stayer, i, a.host), a.host, a.port, ssl=tls
        )
        await asyncio.wait_for(s.upgraded, 10)
        stayers.append(s)
    pub = stayers[0]
    stop, sent = asyncio.Event(), [0]
    publisher = asyncio.create_task(publish(pub, a.rate, stop, sent))
    if not await until(lambda: all(s.received for s in stayers), 30):
        raise SystemExit("soak_stayers: no numbered message reached every stayer within 30 s")
    print("ready", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "census":
            print(json.dumps(await census(stayers)), flush=True)
        elif line in ("stop", ""):
            break
    stop.set()
    await publisher
    published = sent[0]
    started = time.monotonic()
    await until(lambda: all(s.expected >= published or s.ended for s in stayers), a.drain)
    drained = time.monotonic() - started
    for s in stayers:
        s.leaving = True
        s.send(OP_CLOSE, struct.pack("!H", 1000))
    await until(lambda: all(s.transport is None or s.transport.is_closing() for s in stayers), 5)
    complete = [
        s.received == published and s.expected == published and not s.lost and not s.duplicated
        for s in stayers
    ]
    print(
        json.dumps(
            {
                "stayers": len(stayers),
                "published": published,
                "complete": sum(complete),
                "lost": sum(s.lost + (published - s.expected) for s in stayers),
                "duplicated": sum(s.duplicated for s in stayers),
                "disconnected": sum(1 for s in stayers if s.ended),
                "drain_s": round(drained, 2),
                "problems": [f"stayer {s.index}: {w}" for s in stayers for w in s.problems][:20],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
