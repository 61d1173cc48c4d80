"""Push the time every second to everyone in the "clock" room (seed 001), from a plain thread.

python examples/clock.py [port]
"""

import sys
import time

import roomcast

app = roomcast.Server()


@app.on_connect
def enter(conn, request):
    conn.join("clock")


if __name__ == "__main__":
    running = app.start(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
    print(f"clock on {running.url} (Ctrl-C to stop)")
    try:
        while True:
            app.room("clock").broadcast({"time": time.strftime("%H:%M:%S")})
            time.sleep(1)
    except KeyboardInterrupt:
        running.stop()
