"""The chat preset on three nodes sharing one real redis-server: `num` counts distinct users
on every node and agrees everywhere, kept messages follow a user to any node and through a
restart of every node, exactly once and in order, and a killed node's users go `out`."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from chatclient import ChatClient
from cluster import Node

from conftest import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def chat_nodes(roomcast_redis):
    made: list[Node] = []

    def make(n: int = 3, lease: float = 3.0, *chat_args: str) -> list[Node]:
        new = [
            Node(roomcast_redis.url, lease=lease, chat=True, chat_args=chat_args) for _ in range(n)
        ]
        made.extend(new)
        every = made[-n:]
        for node in every:
            wait_for(
                lambda node=node: (s := node.stats())["connected"] and s["nodes"] >= n - 1,
                timeout=10,
                what="the nodes to see each other",
            )
        return every

    yield make
    for node in made:
        node.stop()


def enter(node: Node, uid: str, name: str, room: str = "r") -> tuple[ChatClient, list, dict]:
    """Enters and returns the client, the kept frames before its enter, and the enter."""
    c = ChatClient(node.ws_url)
    c.send_json(event="enter", message=name, roomid=room, uid=uid)
    frames = c.until("enter")
    return c, frames[:-1], frames[-1]


def counts(nodes: list[Node], room: str = "r") -> list[int]:
    return [node.count(room) for node in nodes]


def test_num_counts_users_once_on_every_node(chat_nodes):
    n0, n1, n2 = chat_nodes(3)
    ann0, _, e = enter(n0, "ann", "Ann")
    assert e["num"] == 1
    bob, _, e = enter(n1, "bob", "Bob")
    assert e["num"] == 2
    assert ann0.expect("enter")["name"] == "Bob"
    # Ann again, on a third node: still two users.
    ann2, _, e = enter(n2, "ann", "Ann")
    assert e["num"] == 2
    wait_for(lambda: counts([n0, n1, n2]) == [2, 2, 2], what="num 2 on every node")
    # One of Ann's connections ends: she is still online through the other, no `out`.
    ann0.close()
    bob.expect("enter")  # ann's second enter
    bob.assert_nothing(within=0.5)
    assert counts([n0, n1, n2]) == [2, 2, 2]
    # Her last connection ends: `out` on the other node, and every count agrees.
    ann2.close()
    assert bob.expect("out") == {"event": "out", "name": "Ann", "num": 1}
    wait_for(lambda: counts([n0, n1, n2]) == [1, 1, 1], what="num 1 on every node")
    bob.close()


def test_a_message_reaches_members_on_every_node_once(chat_nodes):
    nodes = chat_nodes(3)
    clients = [enter(node, f"u{i}", f"U{i}")[0] for i, node in enumerate(nodes)]
    for i, c in enumerate(clients):
        for _ in range(len(clients) - 1 - i):
            c.expect("enter")
    clients[0].say("hello, cluster")
    for c in clients:
        got = c.expect("message")
        assert (got["message"], got["name"], got["num"]) == ("hello, cluster", "U0", 3)
        c.assert_nothing(within=0.3)
    for c in clients:
        c.close()


def test_kept_messages_follow_a_user_to_any_node_and_through_a_restart_of_every_node(
    chat_nodes, roomcast_redis
):
    first = chat_nodes(2)
    carol, _, _ = enter(first[0], "carol", "Carol")
    bob, _, _ = enter(first[1], "bob", "Bob")
    carol.expect("enter")
    carol.close()
    assert bob.expect("out")["name"] == "Carol"
    bob.say("while you were out")
    bob.say("and again")
    live = [bob.expect("message"), bob.expect("message")]
    bob.close()
    for node in first:
        node.stop()  # every node goes; Redis stays
    second = chat_nodes(2)
    carol, kept, enter_frame = enter(second[1], "carol", "Carol")
    assert kept == [{**f, "roomid": "r"} for f in live]
    assert enter_frame["num"] == 1
    carol.close()
    # Exactly once: nothing comes again on the next entry, on the other node.
    carol, kept, _ = enter(second[0], "carol", "Carol")
    assert kept == []
    carol.close()
    # The counters are the cluster's (kept by the first nodes, delivered by the second).
    wait_for(
        lambda: (s := second[0].chat_stats())["offline_delivered"] == 2 and s["offline_kept"] == 2,
        what="the cluster's counters to show 2 kept and 2 delivered",
    )


def test_kept_and_live_messages_reach_a_user_reentering_mid_conversation_once_in_order(
    chat_nodes,
):
    n0, n1, n2 = chat_nodes(3)
    talker, _, _ = enter(n0, "tom", "Tom")
    carol, _, _ = enter(n2, "carol", "Carol")
    talker.expect("enter")
    total_sent: list[str] = []
    for cycle, node in enumerate([n1, n2]):
        carol.close()
        assert talker.expect("out")["name"] == "Carol"
        total = 120
        texts = [f"c{cycle}-m{i}" for i in range(total)]
        total_sent += texts

        def talk(texts: list[str] = texts) -> None:
            for text in texts:
                talker.say(text)
                time.sleep(0.003)

        t = threading.Thread(target=talk)
        t.start()
        try:
            time.sleep(0.1)  # mid-conversation: she comes back on another node
            carol, kept, _enter_frame = enter(node, "carol", "Carol")
            rest = carol.collect(total - len(kept))
        finally:
            t.join(20)
        got = [f["message"] for f in kept + rest if f["event"] == "message"]
        assert got == texts, f"cycle {cycle}: {len(got)} of {total}; first wrong at " + str(
            next((i for i, (a, b) in enumerate(zip(got, texts)) if a != b), None)
        )
        assert kept, "she was away while the room talked: some messages were kept"
        assert all(f["roomid"] == "r" for f in kept)
        carol.assert_nothing(within=0.2)
        # The talker saw its own messages and her enter, in one order.
        seen = talker.collect(total + 1)
        assert [f["message"] for f in seen if f["event"] == "message"] == texts
    carol.close()
    talker.close()


def test_a_killed_nodes_users_go_out_within_the_lease(chat_nodes):
    lease = 1.0
    n0, n1, n2 = chat_nodes(3, lease=lease)
    erin, _, _ = enter(n0, "erin", "Erin")
    _dave, _, _ = enter(n2, "dave", "Dave")
    erin.expect("enter")
    wait_for(lambda: counts([n0, n1, n2]) == [2, 2, 2], what="num 2 everywhere")
    n2.signal(signal.SIGKILL)
    killed = time.monotonic()
    out = erin.expect("out", timeout=lease + 3)
    took = time.monotonic() - killed
    assert out == {"event": "out", "name": "Dave", "num": 1}
    # The lease, plus a tick (a third of it) and delivery on a busy 2-core machine.
    assert took <= lease * 4 / 3 + 1.0, f"out after {took:.2f} s with a {lease} s lease"
    wait_for(lambda: counts([n0, n1]) == [1, 1], what="num 1 on the live nodes")
    erin.close()


def test_chat_goes_on_through_a_redis_restart_and_counts_are_rebuilt(chat_nodes, roomcast_redis):
    n0, n1 = chat_nodes(2)
    ann, _, _ = enter(n0, "ann", "Ann")
    bob, _, _ = enter(n1, "bob", "Bob")
    ann.expect("enter")
    roomcast_redis.kill()  # no persistence: the roster is gone with it
    started = time.monotonic()
    ann.say("while Redis is away")
    # Local chat does not wait for Redis.
    assert ann.expect("message")["message"] == "while Redis is away"
    assert time.monotonic() - started < 1.0
    wait_for(lambda: n0.chat_stats()["store_failures"] >= 1, what="the failed keep counted")
    roomcast_redis.restart()
    # The message waited at n0 and reaches bob once Redis is back.
    assert bob.expect("message", timeout=10)["message"] == "while Redis is away"
    # Each node re-registers its users within a tick: nobody has to enter again.
    wait_for(
        lambda: int(roomcast_redis.command("HLEN", "roomcast:chat:r:r:online")) == 2,
        timeout=10,
        what="ann and bob online in Redis again",
    )
    carol, _, enter_frame = enter(n1, "carol", "Carol")
    assert enter_frame["num"] == 3
    assert bob.expect("enter")["num"] == 3
    ann.close()
    out = bob.expect("out", timeout=5)
    assert (out["name"], out["num"]) == ("Ann", 2)
    wait_for(lambda: counts([n0, n1]) == [2, 2], what="num 2 on both nodes")
    assert any("could not" in line and "Redis" in line for line in n0.lines)
    carol.close()
    bob.close()


def test_offline_bounds_hold_in_redis(chat_nodes):
    n0, n1 = chat_nodes(2, 3.0, "--offline-limit", "2", "--offline-ttl", "1.5")
    carol, _, _ = enter(n0, "carol", "Carol")
    bob, _, _ = enter(n1, "bob", "Bob")
    carol.expect("enter")
    carol.close()
    bob.expect("out")
    for i in range(5):
        bob.say(f"m{i}")
    seen = bob.collect(5)
    # The newest two are kept (offline_limit), the oldest three dropped and counted.
    carol, kept, _ = enter(n0, "carol", "Carol")
    assert kept == [{**f, "roomid": "r"} for f in seen[3:]]
    wait_for(
        lambda: (s := n1.chat_stats())["offline_dropped_full"] == 3 and s["offline_waiting"] == 0,
        what="3 dropped as full, none waiting",
    )
    bob.expect("enter")
    carol.close()
    bob.expect("out")
    bob.say("kept, then too old")
    bob.expect("message")
    time.sleep(1.6)  # past offline_ttl: the membership ends with what was kept
    bob.say("after her membership ended")
    bob.expect("message")
    carol, kept, _ = enter(n1, "carol", "Carol")
    assert kept == []
    wait_for(
        lambda: (
            (s := n0.chat_stats())["offline_dropped_expired"] == 1 and s["offline_waiting"] == 0
        ),
        what="1 dropped as expired, none waiting",
    )
    carol.close()
    bob.close()
