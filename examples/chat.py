"""A small multi-room chat in plain hooks: {"event":"join","room":...}, {"event":"say","text":...}.

python examples/chat.py [port]
"""

import sys

import roomcast

app = roomcast.Server(heartbeat_interval=30.0)


@app.on_connect
def hello(conn, request):
    conn.state["name"] = request.query.get("name", f"guest{conn.id}")


@app.on("join")
def join(conn, data):
    for room in conn.rooms:
        conn.leave(room)
        app.room(room).broadcast({"event": "out", "name": conn.state["name"]})
    conn.join(data["room"])
    app.room(data["room"]).broadcast(
        {"event": "enter", "name": conn.state["name"], "num": len(app.room(data["room"]))}
    )


@app.on("say")
def say(conn, data):
    for room in conn.rooms:
        app.room(room).broadcast(
            {"event": "message", "name": conn.state["name"], "message": data["text"]}
        )


@app.on_disconnect
def gone(conn, code, reason):
    print(f"{conn.state.get('name')} left ({code} {reason})")


if __name__ == "__main__":
    app.run(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
