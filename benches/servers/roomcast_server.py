"""roomcast under the benchmark protocol (benches/PROTOCOL.md).

    python roomcast_server.py PORT [--relay | --chat-preset] [--broker redis://HOST:PORT/DB]

Default: every path goes through ordinary sync Python hooks (join in on_connect, echo and
broadcast in on_message). With --relay, /sub, /pub and /chat are relays handled in Rust with
no Python in the path; /echo still echoes through its hook. With --chat-preset the server is
`roomcast.presets.chat()` and nothing else: every path speaks the chat protocol, handled in
Rust with no Python in the path (scenario c; benches/PROTOCOL.md, "Chat protocol").
With --broker URL the server is one node of a cluster (`roomcast.Server(broker=URL)`): room
broadcasts reach the room's members on every node sharing that Redis (benches/loadgen/README.md,
"cluster").
"""

import os
import sys

import roomcast

port = int(sys.argv[1])
relay = "--relay" in sys.argv[2:]
settings = {
    "heartbeat_interval": float(os.environ.get("ROOMCAST_HEARTBEAT", "30")),
    "io_threads": int(os.environ.get("ROOMCAST_IO_THREADS", "1")),
    "workers": int(os.environ.get("ROOMCAST_WORKERS", "2")),
    # "deflate" turns permessage-deflate on (benches/deflate_cost.py compares it with off).
    "compression": os.environ.get("ROOMCAST_COMPRESSION") or None,
}
if "--broker" in sys.argv[2:]:
    settings["broker"] = sys.argv[sys.argv.index("--broker") + 1]

if "--chat-preset" in sys.argv[2:]:
    from roomcast import presets

    presets.chat(**settings).run(host="127.0.0.1", port=port)
    sys.exit(0)

app = roomcast.Server(**settings)

if relay:
    app.relay("/sub", "bench", echo=False)
    app.relay("/pub", "bench", join=False, echo=False)
    app.relay("/chat", "chat")
else:
    rooms = {"/sub": "bench", "/chat": "chat"}

    @app.on_connect
    def join(conn, request):
        room = rooms.get(request.path)
        if room:
            conn.join(room)


bench = app.room  # bound once: the hooks below stay trivial


@app.on_message
def message(conn, msg):
    path = conn.path
    if path == "/echo":
        conn.send(msg)
    elif path == "/pub":
        bench("bench").broadcast(msg)
    elif path == "/chat":
        bench("chat").broadcast(msg)


app.run(host="127.0.0.1", port=port)
