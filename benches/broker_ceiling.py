"""How far one Redis carries the broker: publishes messages through one node as fast as the
broker takes them and measures, per message, the CPU Redis spends (from /proc) while the
other nodes receive them. docs/scaling.md projects from these figures.

    python benches/broker_ceiling.py [--nodes 3] [--messages 200000] [--size 64,1024]

Nodes run in this process (one I/O thread each), Redis is a real redis-server
(roomcast.testing.RedisServer). Each row: messages/s end to end (published on node 0 until
every other node has received all), and Redis CPU µs per message; a core of Redis then
carries about 1e6 / (µs per message) messages/s to that many nodes.
"""

from __future__ import annotations

import argparse
import os
import time

import roomcast
from roomcast.testing.redis import RedisServer


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(nodes: int, messages: int, size: int) -> dict[str, float]:
    with RedisServer() as redis:
        # The burst is pushed faster than Redis takes it: the buffer must hold all of it.
        apps = [roomcast.Server(broker=redis.url, io_threads=1, heartbeat_interval=None,
                                broker_buffer=messages + 1024)
                for _ in range(nodes)]
        running = [app.start(port=0) for app in apps]
        try:
            deadline = time.monotonic() + 10
            while not all(r.stats()["broker"]["nodes"] == nodes - 1 for r in running):
                assert time.monotonic() < deadline, "nodes did not see each other"
                time.sleep(0.05)
            room = apps[0].room("bench")
            payload = "x" * size
            before = [r.stats()["broker"]["received"] for r in running[1:]]
            cpu0 = cpu_seconds(redis.pid)
            start = time.perf_counter()
            for _ in range(messages):
                room.broadcast(payload)
            deadline = time.monotonic() + 120
            while any(r.stats()["broker"]["received"] - b < messages
                      for r, b in zip(running[1:], before)):
                assert time.monotonic() < deadline, "messages did not all arrive"
                time.sleep(0.01)
            took = time.perf_counter() - start
            cpu = cpu_seconds(redis.pid) - cpu0
            lost = sum(r.stats()["broker"]["lost"] for r in running)
            return {"msgs_per_s": messages / took, "redis_us_per_msg": cpu / messages * 1e6,
                    "redis_cpu_pct": cpu / took * 100, "lost": lost}
        finally:
            for r in running:
                r.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", default="2,3,5")
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", default="64,1024")
    a = p.parse_args()
    print("| nodes | message | msgs/s end to end | Redis CPU µs/msg | Redis CPU % | lost |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in a.size.split(",")):
        for nodes in (int(n) for n in a.nodes.split(",")):
            r = run(nodes, a.messages, size)
            print(f"| {nodes} | {size} B | {r['msgs_per_s']:,.0f} | {r['redis_us_per_msg']:.2f} "
                  f"| {r['redis_cpu_pct']:.0f} | {r['lost']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
