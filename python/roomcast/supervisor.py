"""Several processes serving one port: ``roomcast run module:app --workers N`` and
``app.run(host, port, processes=N)``.

The process you start becomes the supervisor and serves nothing itself. It reserves the port,
then starts N workers, each an ordinary ``roomcast run module:app`` child that a private
environment variable tells to bind with SO_REUSEPORT, so the kernel spreads new connections
across them. A worker that dies unexpectedly is restarted after a backoff, with a log line; one
that exits with status 2 (``roomcast run`` could not start it: an import error, a bad setting)
stops them all, since its siblings would fail the same way. SIGINT and SIGTERM are forwarded
to every worker, which shuts down as ``Server.run`` does (1001 to its clients, up to
``shutdown_timeout`` to drain); the supervisor waits for all of them and exits 0, or 1 when one
had to be killed.

Workers share nothing but the port: connections, rooms and ``conn.state`` live in one process.
Rooms span the workers only through the broker (``Server(broker=...)``), so more than one
worker without a broker is refused rather than silently splitting every room.

Why ``subprocess`` rather than ``multiprocessing``: a worker is then exactly what
``roomcast run`` runs in a single process (the same import, signal handling and shutdown, and
it shows up as such in ``ps``); nothing is pickled (an app holds hooks, locks and threads); no
worker re-executes the parent's ``__main__``; and the supervisor holds plain ``Popen``
objects to poll, signal and kill. The price: the app must be importable as
``module:attribute``, which ``app_spec`` works out for ``app.run(processes=N)``.

Names: ``Server(workers=8)`` is the number of hook *threads* in each process; ``--workers``
(gunicorn's word for processes) and ``processes=`` count processes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from .server import Server

logger = logging.getLogger("roomcast")

WORKER_INDEX_ENV = "ROOMCAST_WORKER_INDEX"
"""Set in each worker to its index, 0 to N-1; a restarted worker keeps the index it replaces."""

_SUPERVISOR_ENV = "_ROOMCAST_SUPERVISOR_PID"
"""Private: set in each worker to the supervisor's pid. The worker binds with SO_REUSEPORT,
and shuts down if the supervisor dies."""

EXIT_STARTUP_ERROR = 2
"""``roomcast run``'s exit status for an error the user must fix; never restarted."""

FIRST_RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
"""A worker that ran this long before dying starts its backoff over from the first delay."""
STOP_MARGIN = 10.0
"""Waited at shutdown beyond the app's ``shutdown_timeout``: hooks finishing, interpreters
exiting."""

_worker: Optional[int] = None


def worker_label() -> str:
    """``"worker 0 (pid 1234) "`` in a worker, for its log lines; ``""`` elsewhere."""
    return "" if _worker is None else f"worker {_worker} (pid {os.getpid()}) "


def say(line: str) -> None:
    """Write ``line`` to stderr in one write: a supervisor and its workers share the stream,
    and ``print`` writes the newline apart (unbuffered, their lines would interleave)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def claim_worker() -> Optional[int]:
    """Called by ``roomcast run`` before it imports the app: when a supervisor started this
    process, note its index, remove the private variable (processes this one starts are not
    workers) and shut down gracefully if the supervisor dies, rather than serve on as an
    orphan."""
    global _worker
    supervisor = os.environ.pop(_SUPERVISOR_ENV, None)
    if supervisor is None:
        return None
    _worker = int(os.environ.get(WORKER_INDEX_ENV, "0"))
    threading.Thread(
        target=_stop_when_orphaned,
        args=(int(supervisor),),
        name="roomcast-orphan-watch",
        daemon=True,
    ).start()
    return _worker


def _stop_when_orphaned(supervisor: int) -> None:
    # Polled: PR_SET_PDEATHSIG is Linux-only, and a second's delay is fine for a rare event.
    while os.getppid() == supervisor:
        time.sleep(1.0)
    logger.warning("worker %s: the supervisor (pid %d) is gone; shutting down", _worker, supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


def check(app: Server, processes: int, option: str) -> None:
    """Refuse, in one line (``ValueError``), ``processes`` workers that cannot serve ``app``
    correctly; ``option`` is how the user asked (``--workers 4``, ``processes=4``)."""
    if processes < 1:
        raise ValueError(f"{option}: the number of processes must be at least 1")
    if processes == 1:
        return
    if app.broker_url is None:
        raise ValueError(
            f"{option} needs a broker: each process has its own rooms, so without one a "
            "broadcast reaches only the clients connected to the process that sent it; "
            'configure Server(broker="redis://HOST:6379/0"), or serve one process'
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError(
            f"{option} needs SO_REUSEPORT, which this platform lacks; "
            "run one process per port behind a load balancer instead"
        )


def app_spec(app: Server, option: str) -> tuple[str, str]:
    """``(module:attribute, folder to import it from)`` naming ``app`` for the workers of
    ``app.run(processes=N)``: the module-level variable that holds it, in the script being run
    (imported by the workers under its own name, so its ``__main__`` block does not run) or in
    an imported module."""
    main = sys.modules.get("__main__")
    for name, module in [("__main__", main), *list(sys.modules.items())]:
        if module is None:
            continue
        attrs = [attr for attr, value in list(vars(module).items()) if value is app]
        if not attrs:
            continue
        file = getattr(module, "__file__", None)
        if name == "__main__":
            spec = getattr(module, "__spec__", None)
            name = spec.name if spec is not None else _stem(file)
        root = _import_root(file, name)
        if root is not None:
            return f"{name}:{attrs[0]}", root
    raise ValueError(
        f"{option}: each worker process imports the app as module:attribute, and this app is "
        "not a variable of an importable module; create it at module level (and call run() "
        'under `if __name__ == "__main__":`), or use `roomcast run module:app --workers N`'
    )


def _stem(file: Optional[str]) -> str:
    return os.path.splitext(os.path.basename(file))[0] if file else ""


def _import_root(file: Optional[str], name: str) -> Optional[str]:
    """The folder from which ``import name`` finds ``file``, or None when it would not."""
    if not file or not name or not all(part.isidentifier() for part in name.split(".")):
        return None
    path, ext = os.path.splitext(os.path.abspath(file))
    if ext != ".py":
        return None
    if os.path.basename(path) == "__init__":
        path = os.path.dirname(path)
    for part in reversed(name.split(".")):
        if os.path.basename(path) != part:
            return None
        path = os.path.dirname(path)
    return path


def run_processes(app: Server, host: str, port: int, processes: int) -> None:
    """``app.run(host, port, processes=N)``: ``supervise`` the module-level variable that holds
    ``app``; raises when the workers could not start or stop cleanly."""
    option = f"processes={processes}"
    if _worker is not None:  # else each worker would start workers of its own
        raise RuntimeError(
            f"run({option}) was called while worker {_worker} imported the app's module; "
            'call run() under `if __name__ == "__main__":` so that workers only import the app'
        )
    check(app, processes, option)
    spec, root = app_spec(app, option)
    status = supervise(
        spec,
        root,
        host,
        port,
        processes,
        log_level=_log_level_name(),
        shutdown_timeout=app.shutdown_timeout,
    )
    if status == EXIT_STARTUP_ERROR:
        raise RuntimeError(f"{option}: a worker could not start {spec} (its error is above)")
    if status != 0:
        raise RuntimeError(f"{option}: a worker did not stop cleanly (see the log above)")


def _log_level_name() -> str:
    """The ``--log-level`` that keeps the ``roomcast`` logger's current level in a worker."""
    level = logger.getEffectiveLevel()
    for name, value in (("debug", 10), ("info", 20), ("warning", 30)):
        if level <= value:
            return name
    return "error"


def supervise(
    spec: str,
    app_dir: str,
    host: str,
    port: int,
    processes: int,
    *,
    log_level: str = "info",
    shutdown_timeout: float = 5.0,
    extra: Sequence[str] = (),
) -> int:
    """Serve ``spec`` (``module:attribute``, imported from ``app_dir``) with ``processes``
    workers on one port until SIGINT or SIGTERM; returns the exit status (0: every worker
    stopped cleanly; 1: one had to be killed; 2: one could not start). ``port=0`` picks a free
    port for all of them. ``extra`` are more ``roomcast run`` options for every worker (TLS).
    SIGHUP is passed on to every worker (it reloads their TLS certificate). Call from the
    main thread (it takes the signals)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("worker processes are supervised from the main thread only")
    with _reserve(host, port) as reserved:
        port = reserved.getsockname()[1]
        command = [sys.executable, "-m", "roomcast", "run", spec, "--host", host]
        command += ["--port", str(port), "--log-level", log_level]
        command += ["--app-dir", os.path.abspath(app_dir), *extra]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        say(
            f"roomcast: supervisor (pid {os.getpid()}) starting {processes} worker processes "
            f"on {'wss' if '--ssl-certfile' in extra else 'ws'}://{where} (Ctrl-C to stop)"
        )
        return _Supervisor(command, processes, shutdown_timeout + STOP_MARGIN).run()


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (never listen on) a SO_REUSEPORT socket to the address, held while the supervisor
    runs: it picks the port when ``port`` is 0; it fails at once, here, when a server without
    SO_REUSEPORT holds the port; and no other program can take the port while a worker
    restarts. Connections never reach it: the kernel gives them to listening sockets only."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"could not listen on {where}: {exc.strerror}") from None
    error = "the address resolved to nothing"
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc.strerror or str(exc)
    raise OSError(
        f"could not listen on {where}: {error} (is another server using that port? "
        "pick another, or port=0 for a free one)"
    )


@dataclass
class _Worker:
    index: int
    process: Optional[subprocess.Popen[bytes]] = None
    started: float = 0.0
    failures: int = 0
    """Deaths in a row, each within ``STABLE_AFTER`` of its start: the backoff's exponent."""
    start_at: float = 0.0
    """When to start it again, while ``process`` is None."""


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class _Supervisor:
    def __init__(self, command: list[str], processes: int, grace: float) -> None:
        self.command = command
        self.workers = [_Worker(i) for i in range(processes)]
        self.grace = grace
        self.signal: Optional[int] = None
        self.wake = threading.Event()

    def run(self) -> int:
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            return self._stop(self._serve())
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for worker in self.workers:  # none outlives the supervisor, even after a bug here
                if worker.process is not None and worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal is None:
            self.signal = signum
        self.wake.set()

    def _on_hangup(self, signum: int, frame: Optional[FrameType]) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def _serve(self) -> int:
        """Keep every worker running until a signal (then 0), or until one cannot start (2)."""
        while self.signal is None:
            now = time.monotonic()
            for worker in self.workers:
                if worker.process is None:
                    if now >= worker.start_at:
                        self._start(worker, now)
                    continue
                code = worker.process.poll()
                if code is None:
                    continue
                pid, worker.process = worker.process.pid, None
                if code == EXIT_STARTUP_ERROR:
                    logger.error(
                        "worker %d (pid %d) could not start (exit status %d, its error is "
                        "above); stopping the others",
                        worker.index,
                        pid,
                        code,
                    )
                    return EXIT_STARTUP_ERROR
                self._restart_later(worker, pid, code, now)
            self.wake.wait(0.1)
        return 0

    def _start(self, worker: _Worker, now: float) -> None:
        env = {**os.environ, WORKER_INDEX_ENV: str(worker.index), _SUPERVISOR_ENV: str(os.getpid())}
        try:
            worker.process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:  # out of processes or memory: try again later
            logger.error("could not start worker %d: %s", worker.index, exc)
            self._back_off(worker, now)
            return
        worker.started = now

    def _restart_later(self, worker: _Worker, pid: int, code: int, now: float) -> None:
        ran = now - worker.started
        if ran >= STABLE_AFTER:
            worker.failures = 0
        delay = self._back_off(worker, now)
        logger.warning(
            "worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s",
            worker.index,
            pid,
            _exit_reason(code),
            ran,
            delay,
        )

    def _back_off(self, worker: _Worker, now: float) -> float:
        delay = min(FIRST_RESTART_DELAY * 2.0**worker.failures, MAX_RESTART_DELAY)
        worker.failures += 1
        worker.start_at = now + delay
        return delay

    def _stop(self, status: int) -> int:
        """Forward the signal (SIGTERM after a failed start) to every worker and wait for
        them; returns ``status``, or 1 when a worker did not stop cleanly."""
        sig = signal.SIGTERM if self.signal is None else signal.Signals(self.signal)
        running = [(w, w.process) for w in self.workers if w.process is not None]
        say(
            f"roomcast: supervisor: {sig.name}: stopping {len(running)} worker processes "
            f"(waiting up to {self.grace:g} s)"
        )
        for _, process in running:
            process.send_signal(sig)
        deadline = time.monotonic() + self.grace
        clean = True
        for worker, process in running:
            try:
                code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d (pid %d) did not stop within %g s; killing it",
                    worker.index,
                    process.pid,
                    self.grace,
                )
                process.kill()
                process.wait()
                clean = False
                continue
            # 0: Server.run's graceful stop; -sig or 130: the signal came before run() took it
            if code not in (0, -sig, 130):
                logger.error(
                    "worker %d (pid %d) stopped with %s",
                    worker.index,
                    process.pid,
                    _exit_reason(code),
                )
                clean = False
        if not clean:
            return status or 1
        say("roomcast: supervisor: every worker stopped")
        return status
