"""The seed's own client (seeds/000), unchanged, from Node: tests/node/seed_client.js speaks
exactly what the Vue page sends (enter, message, heartbeat pong) with the `ws` package.

Needs ``node`` and ``npm`` on PATH: skipped without them, except in CI (``CI=true``), where
their absence fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roomcast import presets

NODE_DIR = Path(__file__).parent / "node"
HEARTBEAT = 0.3
LINGER_MS = 1000  # both stay this long in the room: a few heartbeats pass


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = (
            f"`{name}` not found: install Node.js 18+ with npm (on PATH) to run the seed "
            "client's test; `npm ci` in tests/node then runs by itself"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (required when CI=true)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with tests/node's dependencies installed (once per session)."""
    node = _tool("node")
    npm = _tool("npm")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


def chat_frames(report):
    return [f for f in report["frames"] if f["event"] != "heartbeat"]


def test_the_seed_client_works_unchanged(start, node):
    app = presets.chat(heartbeat_interval=HEARTBEAT)
    server = start(app)
    # The seed's client connects to ws://host:port (the root path).
    done = subprocess.run(
        [node, "seed_client.js", server.url, str(LINGER_MS), "seed-room"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip(), f"no report; stderr:\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["ok"], json.dumps(report, indent=1, ensure_ascii=False)
    alice, bob = report["alice"], report["bob"]
    assert alice["errors"] == bob["errors"] == []

    def enter(name, uid, num):
        return {
            "event": "enter",
            "message": name,
            "roomid": "seed-room",
            "uid": uid,
            "name": name,
            "num": num,
        }

    seen_by_alice = chat_frames(alice)
    assert seen_by_alice[:2] == [enter("alice", "1", 1), enter("bob", "2", 2)]
    said = [(f["event"], f["message"], f["name"], f["num"]) for f in seen_by_alice[2:4]]
    assert said == [
        ("message", "hello from alice", "alice", 2),
        ("message", "hi alice", "bob", 2),
    ]
    assert seen_by_alice[4:] == [{"event": "out", "name": "bob", "num": 1}]

    seen_by_bob = chat_frames(bob)
    assert seen_by_bob[0] == enter("bob", "2", 2)
    said = [(f["event"], f["message"], f["name"], f["num"]) for f in seen_by_bob[1:]]
    assert said == [
        ("message", "hello from alice", "alice", 2),
        ("message", "hi alice", "bob", 2),
    ]

    # What the page would show: the seed's own strings, own lines once (hidden echo).
    assert alice["lists"] == [
        "欢迎:alice加入聊天室!",
        "欢迎:bob加入聊天室!",
        "alice:hello from alice",
        "bob:hi alice",
        "bob已经退出了聊天室!",
    ]
    assert bob["lists"] == ["欢迎:bob加入聊天室!", "alice:hello from alice", "bob:hi alice"]
    assert alice["num"] == 1  # the page's counter after bob left

    # Heartbeats reached the page with the room's num, and it answered each with pong.
    for who in (alice, bob):
        beats = [f for f in who["frames"] if f["event"] == "heartbeat"]
        assert len(beats) >= 2, who
        assert who["pongs"] == len(beats)
        entered = next(i for i, f in enumerate(who["frames"]) if f["event"] == "enter")
        for i, f in enumerate(who["frames"]):
            if f["event"] != "heartbeat":
                continue
            if i < entered:  # before its own enter the connection is in no room: no num
                assert f == {"event": "heartbeat", "message": "ping"}, f
            else:
                assert f["message"] == "ping" and f["num"] in (1, 2), f
    assert any(f.get("num") == 2 for f in bob["frames"] if f["event"] == "heartbeat")
