"""Benchmark peer: socketify (uWebSockets for Python), rooms via uWS pub/sub topics.

Implements benches/PROTOCOL.md: /echo, /sub, /pub, /chat on 127.0.0.1:PORT.
/sub and /chat subscribe to topics "bench" and "chat"; /pub and /chat call
app.publish() (the app-level publish also reaches the sender, as /chat needs).
uWS unsubscribes closed sockets itself. Compression is DISABLED; idle timeout
and automatic pings stay at socketify's defaults (120 s, pings off).
max_backpressure is raised from 64 KiB to 64 MiB: above it uWS silently drops
messages, while the other peers buffer them, so counts would not compare.

Needs the Debian package libuv1 (libsocketify_linux_amd64.so links libuv.so.1).
Run:  python socketify_server.py PORT
"""

import sys

from socketify import App, CompressOptions

app = App()


def echo(ws, message, opcode):
    ws.send(message, opcode)


def pub(ws, message, opcode):
    app.publish("bench", message, opcode)


def chat(ws, message, opcode):
    app.publish("chat", message, opcode)


def behaviour(message, open=None):
    return {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 16 * 1024 * 1024,
        "max_backpressure": 64 * 1024 * 1024,
        "open": open,
        "message": message,
    }


app.ws("/echo", behaviour(echo))
app.ws("/sub", behaviour(None, open=lambda ws: ws.subscribe("bench")))  # no handler: ignored
app.ws("/pub", behaviour(pub))
app.ws("/chat", behaviour(chat, open=lambda ws: ws.subscribe("chat")))
app.any("/*", lambda res, req: res.write_status(404).end("not found"))

if __name__ == "__main__":
    app.listen({"port": int(sys.argv[1]), "host": "127.0.0.1"}, lambda config: None)
    app.run()
