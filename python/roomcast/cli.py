"""The ``roomcast`` command.

- ``roomcast run module:app [--host] [--port] [--log-level] [--reload] [--workers N]`` serves
  your app; ``--workers N`` from N processes on one port (``roomcast.supervisor``).
- ``roomcast demo [--host] [--port] [--jwt-secret]`` serves the chat demo.
- ``roomcast --version``.

Errors are one line on stderr and exit status 2, never a traceback wall.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import traceback
from typing import Optional

from . import __version__, supervisor


class CLIError(Exception):
    """A problem the user can fix, said in one line."""


def _listen_line(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}"


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    app = demo.app(jwt_secret=args.jwt_secret, heartbeat_interval=args.heartbeat_interval)
    where = _listen_line(args.host, args.port)
    print(
        f"roomcast demo: open http://{where}/ in a browser "
        f"(chat WebSocket on ws://{where}/, offline messages in memory)",
        file=sys.stderr,
        flush=True,
    )
    app.run(args.host, args.port)
    return 0


def load_app(spec: str, app_dir: str = ".") -> object:
    """Imports ``module:attribute`` (the attribute may be dotted) from ``app_dir`` first."""
    from .server import Server

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"app {spec!r} must be module:attribute, e.g. myapp:app")
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CLIError(
                f"cannot import module {module_name!r}: no such module in {path} "
                "or on the Python path (check the name, or pass --app-dir)"
            ) from None
        raise CLIError(f"importing {module_name!r} failed: {_where(exc)}") from None
    except Exception as exc:
        raise CLIError(f"importing {module_name!r} failed: {_where(exc)}") from None
    app: object = module
    for part in attr.split("."):
        if not hasattr(app, part):
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}")
        app = getattr(app, part)
    if not isinstance(app, Server):
        raise CLIError(
            f"{spec} is a {type(app).__name__}, not a roomcast.Server (create it with "
            "roomcast.Server() or roomcast.presets.chat())"
        )
    return app


def _where(exc: BaseException) -> str:
    """``Kind: message (file, line N)`` of the innermost frame: enough to find it."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" ({os.path.basename(frames[-1].filename)}, line {frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        at = f" ({os.path.basename(exc.filename)}, line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}{at}"


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1 (got {args.workers})")
    if args.reload:
        if args.workers > 1:
            raise CLIError(
                f"--reload cannot be combined with --workers {args.workers}: it restarts one "
                "process when code changes; use --reload in development, --workers in production"
            )
        return _run_reloading(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("roomcast").setLevel(args.log_level.upper())
    supervisor.claim_worker()  # before the import: the app's module may call run()
    app = load_app(args.app, args.app_dir)
    if args.ssl_certfile is not None or args.ssl_keyfile is not None:
        app.use_tls(args.ssl_certfile, args.ssl_keyfile)  # type: ignore[attr-defined]
    if args.workers > 1:
        supervisor.check(app, args.workers, f"--workers {args.workers}")  # type: ignore[arg-type]
        return supervisor.supervise(
            args.app,
            args.app_dir,
            args.host,
            args.port,
            args.workers,
            log_level=args.log_level,
            shutdown_timeout=app.shutdown_timeout,  # type: ignore[attr-defined]
            extra=_tls_flags(args),
        )
    app.run(args.host, args.port)  # type: ignore[attr-defined]
    return 0


def _run_reloading(args: argparse.Namespace) -> int:
    try:
        import watchfiles
    except ImportError:
        raise CLIError("--reload needs watchfiles: pip install 'roomcast[reload]'") from None
    load_app(args.app, args.app_dir)  # fail here, in one line, rather than in every restart
    child = [sys.executable, "-m", "roomcast", "run", args.app]
    child += ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    child += ["--app-dir", args.app_dir, *_tls_flags(args)]
    print(
        f"roomcast: watching {os.path.abspath(args.app_dir)} for changes; "
        "the server restarts when a .py file changes",
        file=sys.stderr,
        flush=True,
    )
    watchfiles.run_process(
        args.app_dir,
        target=shlex.join(child),
        target_type="command",
        watch_filter=watchfiles.PythonFilter(),
        sigint_timeout=10,
    )
    return 0


def _tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        help="serve TLS (wss://) with this certificate chain; SIGHUP reloads it",
    )
    p.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key")


def _tls_flags(args: argparse.Namespace) -> list[str]:
    """The TLS options again, for the processes this one starts."""
    flags = []
    for name in ("ssl_certfile", "ssl_keyfile"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", os.path.abspath(value)]
    return flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomcast", description="roomcast: a WebSocket server for Python with a Rust core."
    )
    p.add_argument("--version", action="version", version=f"roomcast {__version__}")
    commands = p.add_subparsers(dest="command", metavar="COMMAND")

    r = commands.add_parser("run", help="serve a roomcast.Server from your code")
    r.add_argument("app", help="module:attribute of the server, e.g. myapp:app")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    r.add_argument("--port", type=int, default=8765, help="port to listen on (8765)")
    r.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level of the roomcast logger (info)",
    )
    r.add_argument(
        "--reload", action="store_true", help="restart when a .py file changes (development)"
    )
    r.add_argument(
        "--app-dir", default=".", help="directory to import the app from, and to watch (.)"
    )
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (SO_REUSEPORT); above 1 needs "
        "Server(broker=...) so rooms span them. Not Server(workers=), the hook threads (1)",
    )
    _tls_arguments(r)
    r.set_defaults(run=_run)

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
        help="heartbeat interval: a silent client is pinged, closed an interval later (30)",
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
    except CLIError as exc:
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a setting the server refused
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
