"""Benchmark peer: the `picows` library (ws_create_server + WSListener) on plain asyncio.

Implements benches/PROTOCOL.md: /echo, /sub, /pub, /chat on 127.0.0.1:PORT.
picows works on frames: each TEXT/BINARY/CONTINUATION frame is forwarded with
its own type and FIN bit, so echo keeps the message type. Broadcast iterates
the room's transports and calls send(). picows has no permessage-deflate;
auto-ping stays at the library default (off), auto-pong on.

Run:  python picows_server.py PORT
"""

import asyncio
import sys

from picows import WSListener, WSMsgType, ws_create_server

DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)
BENCH, CHAT = set(), set()
SELF = object()  # "send to the sender": echo
MAX_FRAME = 16 * 1024 * 1024


class Conn(WSListener):
    def __init__(self, room, send_to):
        self.room, self.send_to = room, send_to  # room to join; who gets its messages

    def on_ws_connected(self, transport):
        if self.room is not None:
            self.room.add(transport)

    def on_ws_disconnected(self, transport):
        if self.room is not None:
            self.room.discard(transport)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type in DATA:
            if self.send_to is SELF:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)
            elif self.send_to is not None:
                payload = frame.get_payload_as_memoryview()
                for member in self.send_to:
                    member.send(frame.msg_type, payload, frame.fin)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


# path -> (room joined, recipients of its messages); /sub's messages are ignored
ROUTES = {
    b"/echo": (None, SELF),
    b"/sub": (BENCH, None),
    b"/pub": (None, BENCH),
    b"/chat": (CHAT, CHAT),
}


def listener_factory(request):
    route = ROUTES.get(request.path)
    return Conn(*route) if route else None  # None -> 404


async def main(port):
    server = await ws_create_server(listener_factory, "127.0.0.1", port, max_frame_size=MAX_FRAME)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
