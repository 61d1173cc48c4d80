"""The ``roomcast`` command: ``roomcast demo`` serves the chat demo; ``roomcast --version``."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import __version__


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    app = demo.app(jwt_secret=args.jwt_secret, heartbeat_interval=args.heartbeat_interval)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"roomcast demo: open http://{host}:{args.port}/ in a browser "
        f"(chat WebSocket on ws://{host}:{args.port}/, offline messages in memory)",
        file=sys.stderr,
        flush=True,
    )
    app.run(args.host, args.port)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomcast", description="roomcast: a WebSocket server for Python with a Rust core."
    )
    p.add_argument("--version", action="version", version=f"roomcast {__version__}")
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    d = commands.add_parser("demo", help="serve the chat demo (page + chat WebSocket) on one port")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    d.add_argument("--port", type=int, default=8765, help="port to listen on (8765)")
    d.add_argument(
        "--jwt-secret",
        default=None,
        help="turn JWT auth on with this HS256 secret (the page gets a token signed with it)",
    )
    d.add_argument(
        "--heartbeat-interval",
        type=float,
        default=30.0,
        help="seconds between heartbeats; silent clients are closed after one more (30)",
    )
    d.set_defaults(run=_demo)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "run", None) is None:
        parser().print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a setting the server refused
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
