"""Test clusters: roomcast nodes as separate processes (tests/cluster_node.py) sharing one
real redis-server, and clients that check every delivery by sender and sequence number."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from conftest import wait_for

NODE = Path(__file__).with_name("cluster_node.py")


class Node:
    """One roomcast node process; its log lines are kept in ``lines``."""

    def __init__(
        self,
        broker: str,
        *,
        lease: float = 3.0,
        buffer: int = 65536,
        chat: bool = False,
        chat_args: tuple[str, ...] = (),
    ) -> None:
        cmd = [sys.executable, str(NODE), "--broker", broker, "--lease", str(lease)]
        cmd += ["--buffer", str(buffer)] + (["--chat", *chat_args] if chat else [])
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        assert ready and ready[0] == "ready", f"node did not start: {self.lines}"
        self.port = int(ready[1])

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/room/{room}"

    def sender_url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/send/{room}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def count(self, room: str) -> int:
        return int(self.get(f"/count?room={room}"))

    def stats(self) -> dict[str, Any]:
        """The broker's counters."""
        return dict(json.loads(self.get("/stats"))["broker"])

    def chat_stats(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/stats"))["chat"])

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def start_nodes(broker: str, n: int, **kw: Any) -> list[Node]:
    nodes = [Node(broker, **kw) for _ in range(n)]
    for node in nodes:
        wait_for(
            lambda node=node: (s := node.stats())["connected"] and s["nodes"] == n - 1,
            timeout=10,
            what=f"node {node.port} to see the other {n - 1} node(s)",
        )
    return nodes


class Receiver:
    """A client in a room that records ``(sender, seq)`` of each message it gets."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.got: dict[str, list[int]] = defaultdict(list)
        self.total = 0

    async def run(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.total < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                text = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                return
            sender, seq = str(text).split(":")
            self.got[sender].append(int(seq))
            self.total += 1
        # Anything past the expected count would be a duplicate: give it a moment to show.
        try:
            text = await asyncio.wait_for(self.ws.recv(), 0.3)
            sender, seq = str(text).split(":")
            self.got[sender].append(int(seq))
            self.total += 1
        except asyncio.TimeoutError:
            pass

    def check(self, senders: dict[str, int]) -> list[str]:
        """What is wrong with what arrived: each sender's 0..n-1, once each, in order."""
        problems = []
        for sender, n in senders.items():
            seqs = self.got.get(sender, [])
            if seqs != list(range(n)):
                missing = sorted(set(range(n)) - set(seqs))
                dups = len(seqs) - len(set(seqs))
                ordered = seqs == sorted(seqs)
                problems.append(
                    f"{sender}: {len(seqs)}/{n} received, {len(missing)} missing "
                    f"(first {missing[:5]}), {dups} duplicates, in order: {ordered}"
                )
        return problems


async def open_receivers(urls: list[str]) -> list[Receiver]:
    return [Receiver(await connect(url, max_queue=None)) for url in urls]


async def send_numbered(url: str, sender: str, n: int, every: float = 0.0) -> None:
    async with connect(url) as ws:
        for i in range(n):
            await ws.send(f"{sender}:{i}")
            if every:
                await asyncio.sleep(every)
        # Leaving at once would drop the sender from the room before its echo arrives; the
        # messages are already on their way either way.
        await asyncio.sleep(0.05)
