"""Benchmark peer: aiohttp's web server (WebSocketResponse handlers) on uvloop.

Implements benches/PROTOCOL.md: /echo, /sub, /pub, /chat on 127.0.0.1:PORT.
compress=False turns off permessage-deflate (aiohttp enables it by default);
heartbeat stays at the library default (none; autoping answers pings). The
access log is off. Broadcast iterates the room and awaits send_frame() with the
payload encoded once.

Run:  python aiohttp_server.py PORT
"""

import sys

import uvloop
from aiohttp import WSMsgType, web

ROOMS = {"bench": set(), "chat": set()}
MAX_MSG = 16 * 1024 * 1024


async def broadcast(members, msg):
    data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
    for ws in list(members):  # a copy: members may leave during an await
        if not ws.closed:
            try:
                await ws.send_frame(data, msg.type)
            except ConnectionError:  # member went away mid-broadcast
                pass


def endpoint(room=None, on_message=None):
    async def handler(request):
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_MSG)
        await ws.prepare(request)
        if room:
            ROOMS[room].add(ws)
        try:
            async for msg in ws:
                if on_message and msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await on_message(ws, msg)
        except ConnectionError:  # peer vanished while we were sending to it
            pass
        finally:
            if room:
                ROOMS[room].discard(ws)
        return ws

    return handler


async def echo(ws, msg):
    await ws.send_frame(msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data, msg.type)


async def pub(ws, msg):
    await broadcast(ROOMS["bench"], msg)


async def chat(ws, msg):
    await broadcast(ROOMS["chat"], msg)


app = web.Application()
app.router.add_get("/echo", endpoint(on_message=echo))
app.router.add_get("/sub", endpoint(room="bench"))
app.router.add_get("/pub", endpoint(on_message=pub))
app.router.add_get("/chat", endpoint(room="chat", on_message=chat))

if __name__ == "__main__":
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
