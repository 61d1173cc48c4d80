"""Benchmark peer: the `websockets` library (asyncio API) on plain asyncio (no uvloop).

Implements benches/PROTOCOL.md: /echo, /sub, /pub, /chat on 127.0.0.1:PORT.
Broadcasts use websockets.asyncio.server.broadcast(). permessage-deflate is
off (compression=None); keepalive pings stay at the library default (20 s).

Run:  python websockets_server.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

ROOMS = {"bench": set(), "chat": set()}
MAX_SIZE = 16 * 1024 * 1024  # the default is exactly 1 MiB; give headroom


async def handler(ws):
    path = ws.request.path
    try:
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/pub":
            bench = ROOMS["bench"]
            async for message in ws:
                broadcast(bench, message)
        elif path == "/sub":
            ROOMS["bench"].add(ws)
            try:
                async for _ in ws:  # messages from subscribers are ignored
                    pass
            finally:
                ROOMS["bench"].discard(ws)
        elif path == "/chat":
            chat = ROOMS["chat"]
            chat.add(ws)
            try:
                async for message in ws:
                    broadcast(chat, message)
            finally:
                chat.discard(ws)
        else:
            await ws.close(code=1008, reason="unknown path")
    except ConnectionClosed:  # abrupt disconnects are normal here, not errors
        pass


async def main(port):
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=MAX_SIZE) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
