"""Cluster peer: Django Channels with channels_redis's RedisChannelLayer, served by uvicorn
(uvloop, httptools), one node of the cluster scenario (benches/loadgen/README.md, "cluster").

A minimal Django project in one file: `/sub` consumers `group_add` themselves to group `bench`
on connect; `/pub` consumers `group_send` each text message they receive to the group, and
each member's consumer sends it on in its `bench.message` handler. channels_redis stores
group membership and every member's queue in Redis, so members on every node get it. The
channel layer keeps its defaults (capacity 100 per channel, expiry 60 s); only the Redis
client's connection pool is raised from redis-py's default of 100 (with it, the 101st consumer
connecting at once fails with MaxConnectionsError and its client gets HTTP 500).

With `--layer pubsub` the layer is channels_redis's RedisPubSubChannelLayer instead (Redis
pub/sub, no per-channel queues, no capacity), the alternative channels_redis offers.

Run:  python channels_redis_server.py PORT --redis redis://127.0.0.1:6379/0 [--layer pubsub]
"""

import argparse

import django
import uvicorn
from django.conf import settings

ap = argparse.ArgumentParser()
ap.add_argument("port", nargs="?", type=int)
ap.add_argument("--port", dest="port_opt", type=int)
ap.add_argument("--redis", required=True, help="redis://host:port/db")
ap.add_argument("--layer", choices=["core", "pubsub"], default="core")
args = ap.parse_args()
LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
port = args.port_opt or args.port
if not port:
    ap.error("a port is needed")

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": LAYERS[args.layer],
            "CONFIG": {"hosts": [{"address": args.redis, "max_connections": 2000}]},
        },
    },
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402 (needs settings)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Subscriber(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add("bench", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("bench", self.channel_name)

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


class Publisher(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send("bench", {"type": "bench.message", "text": text_data})


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("sub", Subscriber.as_asgi()), path("pub", Publisher.as_asgi())]),
})

uvicorn.run(application, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
            ws_per_message_deflate=False, log_level="warning", access_log=False)
