"""Cluster peer: python-socketio's AsyncServer with its Redis manager, served by uvicorn
(uvloop, httptools), one node of the cluster scenario (benches/loadgen/README.md, "cluster").

Clients speak Socket.IO v5 on the websocket transport only. A connection whose query has
`role=sub` joins room `bench` in the connect handler; a `pub` event is emitted to the room as
`m` with `sio.emit("m", data, room="bench")`. `socketio.AsyncRedisManager` publishes every emit
on Redis and each node (the sender's too) delivers it to its own members of the room. The rest
is python-socketio's defaults (async handlers, ping every 25 s); permessage-deflate is off.

Run:  python socketio_redis_server.py PORT --redis redis://127.0.0.1:6379/0
"""

import argparse

import socketio
import uvicorn

ap = argparse.ArgumentParser()
ap.add_argument("port", nargs="?", type=int)
ap.add_argument("--port", dest="port_opt", type=int)
ap.add_argument("--redis", required=True, help="redis://host:port/db")
args = ap.parse_args()
port = args.port_opt or args.port
if not port:
    ap.error("a port is needed")

sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(args.redis))


@sio.event
async def connect(sid, environ, auth):
    if "role=sub" in environ.get("QUERY_STRING", ""):
        await sio.enter_room(sid, "bench")


@sio.on("pub")
async def pub(sid, data):
    await sio.emit("m", data, room="bench")


uvicorn.run(socketio.ASGIApp(sio), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
            ws_per_message_deflate=False, log_level="warning", access_log=False)
