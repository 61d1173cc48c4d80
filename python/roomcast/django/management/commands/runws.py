"""``python manage.py runws [addr:port]``: the whole project on one port, pages and WebSockets,
served by roomcast's Rust core (see ``roomcast.django.server``)."""

from __future__ import annotations

import re
import signal
import sys
import threading
from datetime import datetime
from typing import Any

import django
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import autoreload

from ...server import build

DEFAULT_PORT = 8000
_ADDRPORT = re.compile(
    r"^(?:(?P<addr>(?P<ipv4>\d{1,3}(?:\.\d{1,3}){3})|\[(?P<ipv6>[a-fA-F0-9:]+)\]"
    r"|(?P<fqdn>[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*)):)?(?P<port>\d+)$"
)


def parse_addrport(addrport: str) -> tuple[str, int]:
    """runserver's ``[addr:]port``; ``0`` as the address means 0.0.0.0."""
    m = _ADDRPORT.match(addrport)
    if m is None:
        raise CommandError(f'"{addrport}" is not a valid port number or address:port pair.')
    addr = m["ipv6"] or m["addr"] or "127.0.0.1"
    if addr == "0":
        addr = "0.0.0.0"
    port = int(m["port"])
    if not 0 < port < 65536:
        raise CommandError(f"{port!r} is not a valid port number.")
    return addr, port


class Command(BaseCommand):
    help = (
        "Serves the project's pages and WebSockets (dwebsocket-style views and ROOMCAST_APP) "
        "on one port with roomcast."
    )
    requires_system_checks = ()  # run in inner_run, as runserver does  # type: ignore[assignment]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", help="optional port number, or ipaddr:port")
        parser.add_argument(
            "--noreload",
            action="store_false",
            dest="use_reloader",
            help="do not restart the server when code changes",
        )
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static",
            help="do not serve static files in DEBUG",
        )
        parser.add_argument(
            "--ssl-certfile",
            metavar="PEM",
            help="serve TLS (https:// and wss://) with this certificate chain; SIGHUP reloads it",
        )
        parser.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key")

    def handle(self, *args: Any, **options: Any) -> None:
        addrport = options["addrport"] or getattr(settings, "ROOMCAST_ADDRPORT", None)
        self.addr, self.port = parse_addrport(str(addrport or DEFAULT_PORT))
        if options["use_reloader"]:
            autoreload.run_with_reloader(self.inner_run, **options)
        else:
            self.inner_run(None, **options)

    def inner_run(self, *args: Any, **options: Any) -> None:
        autoreload.raise_last_exception()
        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        self.check_migrations()
        app = build(static=options["use_static"])
        certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
        if certfile is not None or keyfile is not None:
            try:
                app.use_tls(certfile, keyfile)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        try:
            running = app.start(self.addr, self.port)
        except ValueError as exc:  # an unusable certificate names its file
            raise CommandError(str(exc)) from None
        scheme = "https" if running.tls else "http"
        # Before the banner: whoever waits for it may signal at once.
        done = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: done.set())
            if running.tls:
                signal.signal(signal.SIGHUP, lambda *_: running.reload_tls(raise_errors=False))
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        self.stdout.write(
            f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting roomcast server at {scheme}://{host}:{running.port}/ "
            f"(pages and WebSockets on one port)\n"
            "Quit the server with CONTROL-C.\n"
        )
        self.stdout.flush()
        try:
            # Under the autoreloader this runs on a daemon thread: the reloader's exit (code
            # 3 to restart, or Ctrl-C) ends it with the process.
            while not done.wait(0.5):
                pass
        finally:
            running.stop()
            sys.stdout.flush()
