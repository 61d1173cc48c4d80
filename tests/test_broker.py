"""The Redis broker: three roomcast nodes (separate processes) and one real redis-server
behave as one server to every client, through a Redis restart and a node killed mid-traffic.
Every delivery is checked by sender and sequence number: no loss, no duplicate, order kept."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from cluster import Node, open_receivers, send_numbered, start_nodes

import roomcast

from conftest import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def nodes(request, roomcast_redis):
    made: list[Node] = []

    def make(n: int = 3, **kw):
        made.extend(start_nodes(roomcast_redis.url, n, **kw))
        return made[-n:]

    yield make
    for node in made:
        node.stop()


async def fan_out(nodes, per_node: int, senders: dict, every: float = 0.0, during=None):
    """Receivers spread over the nodes, one sender per node; returns the receivers."""
    urls = [node.url("lobby") for node in nodes for _ in range(per_node)]
    receivers = await open_receivers(urls)
    expected = sum(senders.values())
    sends = [
        send_numbered(nodes[i % len(nodes)].sender_url("lobby"), name, n, every)
        for i, (name, n) in enumerate(senders.items())
    ]
    jobs = [asyncio.gather(*sends)] + [r.run(expected, timeout=30) for r in receivers]
    if during is not None:
        jobs.append(during())
    await asyncio.gather(*jobs)
    for r in receivers:
        await r.ws.close()
    return receivers


def assert_exactly_once(receivers, senders):
    problems = [
        p for i, r in enumerate(receivers) for p in (f"receiver {i}: {x}" for x in r.check(senders))
    ]
    assert not problems, "\n".join(problems[:10])


def test_broadcasts_reach_every_node_once_in_order(nodes):
    cluster = nodes(3)
    senders = {f"s{i}": 400 for i in range(3)}
    receivers = asyncio.run(fan_out(cluster, per_node=3, senders=senders))
    assert_exactly_once(receivers, senders)
    for node in cluster:
        s = node.stats()
        assert (s["lost"], s["dropped"], s["malformed"]) == (0, 0, 0), s


def test_counts_agree_on_every_node_and_members_stay_local(nodes, roomcast_redis):
    cluster = nodes(3)

    async def scenario():
        receivers = await open_receivers(
            [cluster[0].url("a")] * 2 + [cluster[1].url("a")] * 3 + [cluster[2].url("b")]
        )
        for node in cluster:
            wait_for(
                lambda node=node: node.count("a") == 5, timeout=5, what="a counts 5 everywhere"
            )
            wait_for(
                lambda node=node: node.count("b") == 1, timeout=5, what="b counts 1 everywhere"
            )
        await receivers[2].ws.close()
        await receivers[5].ws.close()
        for node in cluster:
            wait_for(
                lambda node=node: node.count("a") == 4, timeout=5, what="a counts 4 everywhere"
            )
            wait_for(
                lambda node=node: node.count("b") == 0, timeout=5, what="b counts 0 everywhere"
            )
        for r in receivers:
            await r.ws.close()

    asyncio.run(scenario())


def test_a_killed_node_leaves_every_count_within_its_lease(nodes):
    lease = 1.0
    cluster = nodes(3, lease=lease)

    async def scenario():
        receivers = await open_receivers([node.url("a") for node in cluster for _ in range(2)])
        for node in cluster:
            wait_for(lambda node=node: node.count("a") == 6, timeout=5, what="6 members everywhere")
        cluster[2].signal(signal.SIGKILL)
        killed = time.monotonic()
        for node in cluster[:2]:
            wait_for(
                lambda node=node: node.count("a") == 4,
                timeout=lease + 2,
                what="the dead node's members to go",
            )
        took = time.monotonic() - killed
        # The lease, plus one check interval (0.1 s) and the probes on a busy 2-core machine.
        assert took <= lease + 1.0, f"counts fell after {took:.2f} s with a {lease} s lease"
        assert any(n.logged("its lease") for n in cluster[:2])
        for r in receivers[:4]:
            await r.ws.close()

    asyncio.run(scenario())


def test_redis_restarted_mid_traffic_loses_nothing(nodes, roomcast_redis):
    cluster = nodes(3)
    senders = {f"s{i}": 300 for i in range(3)}

    async def outage():
        await asyncio.sleep(0.3)
        roomcast_redis.kill()  # no persistence: whatever Redis held is gone
        await asyncio.sleep(0.7)
        roomcast_redis.restart()

    receivers = asyncio.run(
        fan_out(cluster, per_node=2, senders=senders, every=0.005, during=outage)
    )
    assert_exactly_once(receivers, senders)
    stats = [node.stats() for node in cluster]
    assert all(s["reconnects"] >= 1 and s["lost"] == 0 and s["dropped"] == 0 for s in stats), stats
    assert all(n.logged("failed") and n.logged("is back after") for n in cluster)
    # Presence is rebuilt: every node counts every member again.
    for node in cluster:
        wait_for(
            lambda node=node: node.stats()["nodes"] == 2,
            timeout=10,
            what="nodes to see each other again",
        )


def test_local_rooms_keep_working_while_redis_is_down(nodes, roomcast_redis):
    cluster = nodes(2)
    roomcast_redis.kill()

    async def scenario():
        receivers = await open_receivers([cluster[0].url("lobby")])
        await send_numbered(cluster[0].sender_url("lobby"), "s", 20)
        await receivers[0].run(20, timeout=5)
        await receivers[0].ws.close()
        return receivers

    receivers = asyncio.run(scenario())
    assert receivers[0].check({"s": 20}) == []
    wait_for(
        lambda: cluster[0].stats()["unsent"] >= 20, timeout=5, what="messages to wait for Redis"
    )


def test_an_outage_past_the_buffer_drops_the_oldest_counted_and_logged(nodes, roomcast_redis):
    cluster = nodes(2, buffer=100)

    async def scenario():
        receivers = await open_receivers([cluster[1].url("lobby")])
        wait_for(lambda: cluster[0].count("lobby") == 1, timeout=5, what="the member to count")
        roomcast_redis.kill()
        await send_numbered(cluster[0].sender_url("lobby"), "s", 150)
        wait_for(lambda: cluster[0].stats()["dropped"] == 50, timeout=5, what="50 dropped")
        roomcast_redis.restart()
        await receivers[0].run(100, timeout=15)
        await receivers[0].ws.close()
        return receivers[0]

    receiver = asyncio.run(scenario())
    # The newest 100 arrive, once and in order; the oldest 50 were dropped at the publisher.
    assert receiver.got["s"] == list(range(50, 150))
    assert cluster[0].logged("the oldest are being dropped (raise broker_buffer")


def test_a_stuck_node_cannot_grow_redis_and_catches_up_when_it_resumes(nodes, roomcast_redis):
    # Redis cuts a subscriber that falls 64 KiB behind (its default is 32 MiB): the bound is
    # Redis's, the publisher's buffer replays what the stuck node missed.
    roomcast_redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 65536 32768 1")
    cluster = nodes(2)
    n = 4000
    # Big enough to overflow the stuck node's socket buffers too, so Redis's output buffer grows.
    sender = "s" + "x" * 1000

    async def scenario():
        receivers = await open_receivers([cluster[0].url("lobby"), cluster[1].url("lobby")])
        wait_for(lambda: cluster[0].count("lobby") == 2, timeout=5, what="both members to count")
        cluster[1].signal(signal.SIGSTOP)
        await send_numbered(cluster[0].sender_url("lobby"), sender, n)

        def cut_off():
            clients = roomcast_redis.command("CLIENT", "LIST")
            return clients.count("sub=1") == 1  # only the live node's subscriber is left

        wait_for(cut_off, timeout=10, what="Redis to disconnect the stuck subscriber")
        cluster[1].signal(signal.SIGCONT)
        await asyncio.gather(*(r.run(n, timeout=20) for r in receivers))
        for r in receivers:
            await r.ws.close()
        return receivers

    receivers = asyncio.run(scenario())
    assert_exactly_once(receivers, {sender: n})
    assert cluster[1].stats()["gaps"] >= 1


def test_a_bad_broker_url_is_refused_with_what_to_use():
    with pytest.raises(ValueError, match="redis://host:port/db"):
        roomcast.Server(broker="http://nope").start(port=0)
