"""Echo server: every message comes back to its sender.

python examples/echo.py [port]
"""

import sys

import roomcast

app = roomcast.Server()


@app.on_message
def echo(conn, message):
    conn.send(message)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
