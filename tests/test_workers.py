"""Worker processes: `roomcast run module:app --workers N` and `app.run(..., processes=N)`.

Real processes on one real port: the app answers every message with its pid, so a test sees
which worker took a connection. The supervisor and its workers share one stderr pipe, read by
a thread into a list of lines that the tests poll (the serving lines say when a worker is up).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from roomcast.testing import RedisServer

from conftest import log_lines, wait_for

SHUTDOWN_TIMEOUT = 2.0

# Every client joins room "everyone": "say TEXT" broadcasts TEXT to it (through the broker, so
# to the clients of every worker), "nodes" answers how many other workers the broker sees, and
# anything else answers the worker's pid.
PID_APP = f"""
import os
import sys

import roomcast

app = roomcast.Server(broker=os.environ["TEST_BROKER_URL"], shutdown_timeout={SHUTDOWN_TIMEOUT})


@app.on_connect
def joined(conn, request):
    conn.join("everyone")


@app.on_message
def answer(conn, message):
    if message.startswith("say "):
        app.room("everyone").broadcast(message[len("say ") :])
    elif message == "nodes":
        conn.send(str(app.stats()["broker"]["nodes"]))
    else:
        conn.send(str(os.getpid()))


if __name__ == "__main__":
    app.run("127.0.0.1", int(sys.argv[1]), processes=2)
"""

NO_BROKER_APP = """
import roomcast

app = roomcast.Server()
"""

SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) serving on ws://127\.0\.0\.1:(\d+)")
SUPERVISOR = re.compile(
    r"supervisor \(pid \d+\) starting (\d+) worker processes on ws://[^:]+:(\d+)"
)


class Supervised:
    """A supervisor process and the stderr lines it and its workers wrote so far."""

    def __init__(self, args: list[str], cwd: Path, broker: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TEST_BROKER_URL": broker},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):  # closed by close() after a failure
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))

    def find(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for m in map(pattern.search, list(self.lines)) if m]

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """``wait_for``, failing with the stderr written by then."""
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stderr so far:\n{self.text()}") from None

    def wait_line(self, text: str, what: str, timeout: float = 20.0) -> str:
        line = self.wait(
            lambda: next((line for line in list(self.lines) if text in line), None),
            f"{what} ({text!r})",
            timeout,
        )
        return str(line)

    def workers(self, count: int, timeout: float = 20.0) -> tuple[int, dict[int, int]]:
        """Wait until ``count`` workers serve; the port, and each worker's latest pid."""

        def serving() -> Optional[tuple[int, dict[int, int]]]:
            found = self.find(SERVING)
            pids = self.pids()
            return (int(found[-1][3]), pids) if len(pids) >= count else None

        result: tuple[int, dict[int, int]] = self.wait(serving, f"{count} workers", timeout)
        return result

    def pids(self) -> dict[int, int]:
        """Each worker's latest pid, by index, from the serving lines so far."""
        return {int(m[1]): int(m[2]) for m in self.find(SERVING)}

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its workers notice the supervisor is gone and stop
                self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def supervised(tmp_path: Path, roomcast_redis: RedisServer) -> Iterator[Callable[..., Supervised]]:
    """``supervised(*args)`` runs ``python *args`` in ``tmp_path``, the app's broker on a real
    redis-server; stopped after the test."""
    (tmp_path / "pidapp.py").write_text(textwrap.dedent(PID_APP))
    started: list[Supervised] = []

    def start(*args: str) -> Supervised:
        started.append(Supervised(list(args), tmp_path, roomcast_redis.url))
        return started[-1]

    yield start
    for s in started:
        s.close()


def ask(ws: ClientConnection, question: str) -> str:
    ws.send(question)
    return str(ws.recv(timeout=5))


def ask_pid(ws: ClientConnection) -> int:
    return int(ask(ws, "pid?"))


def pid_of_a_new_connection(port: int) -> Optional[int]:
    try:
        with connect(f"ws://127.0.0.1:{port}", open_timeout=5) as ws:
            return ask_pid(ws)
    except (OSError, ConnectionClosed, TimeoutError):  # a worker going down under us
        return None


def closes_with_1001(clients: list[ClientConnection]) -> None:
    for ws in clients:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def fails_fast(args: list[str], cwd: Path) -> tuple[int, str]:
    started = time.monotonic()
    # No worker gets as far as connecting to a broker here: nothing needs to listen on port 1.
    env = {**os.environ, "TEST_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=30, env=env
    )
    assert time.monotonic() - started < 20, done.stderr
    return done.returncode, done.stderr


@pytest.mark.timeout(60)
def test_workers_without_a_broker_refuse_to_start_and_say_why(tmp_path: Path) -> None:
    (tmp_path / "nobroker.py").write_text(textwrap.dedent(NO_BROKER_APP))
    code, err = fails_fast(["-m", "roomcast", "run", "nobroker:app", "--workers", "2"], tmp_path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roomcast: error: --workers 2 needs a broker")
    assert "Server(broker=" in lines[0]
    assert "supervisor" not in err  # refused before any worker was started


@pytest.mark.timeout(60)
def test_reload_and_a_bad_count_are_refused_with_workers(tmp_path: Path) -> None:
    (tmp_path / "nobroker.py").write_text(textwrap.dedent(NO_BROKER_APP))
    run = ["-m", "roomcast", "run", "nobroker:app"]
    code, err = fails_fast([*run, "--workers", "2", "--reload"], tmp_path)
    assert code == 2 and "--reload cannot be combined with --workers 2" in err, err
    code, err = fails_fast([*run, "--workers", "0"], tmp_path)
    assert code == 2 and "--workers must be at least 1" in err, err


@pytest.mark.timeout(60)
def test_workers_share_one_port_and_sigterm_closes_every_client_with_1001(
    supervised: Callable[..., Supervised],
) -> None:
    s = supervised("-m", "roomcast", "run", "pidapp:app", "--workers", "2", "--port", "0")
    port, pids = s.workers(2)
    announced = s.find(SUPERVISOR)
    assert announced and announced[0][1] == "2" and int(announced[0][2]) == port != 0
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}")) for _ in range(20)]
        answered = [ask_pid(ws) for ws in clients]
        assert set(answered) == set(pids.values()), (answered, pids)  # both workers took some
        # The room spans the workers: a broadcast made in one reaches the clients of both.
        one_per_worker = [clients[answered.index(pid)] for pid in pids.values()]
        s.wait(
            lambda: all(ask(ws, "nodes") == "1" for ws in one_per_worker),
            "each worker's broker to see the other worker",
        )
        one_per_worker[0].send("say hello, everyone")
        assert [ws.recv(timeout=5) for ws in clients] == ["hello, everyone"] * len(clients)
        started = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        closes_with_1001(clients)
        assert s.proc.wait(timeout=SHUTDOWN_TIMEOUT + 10) == 0, s.text()
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 5
    s.wait_line("every worker stopped", "the supervisor's last line")


@pytest.mark.timeout(60)
def test_a_killed_worker_is_restarted(supervised: Callable[..., Supervised]) -> None:
    s = supervised("-m", "roomcast", "run", "pidapp:app", "--workers", "2", "--port", "0")
    port, pids = s.workers(2)
    os.kill(pids[0], signal.SIGKILL)
    line = s.wait_line(f"worker 0 (pid {pids[0]}) died (killed by SIGKILL)", "the log line")
    assert "restarting it in 0.1 s" in line, line
    new_pid = s.wait(lambda: s.pids()[0] != pids[0] and s.pids()[0], "a new worker 0", 10)
    s.wait(lambda: pid_of_a_new_connection(port) == new_pid, "the new worker to answer", 10)
    assert s.proc.poll() is None  # the supervisor itself carried on
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=SHUTDOWN_TIMEOUT + 10) == 0, s.text()


@pytest.mark.timeout(60)
def test_app_run_with_processes_serves_from_several_processes(
    supervised: Callable[..., Supervised],
) -> None:
    s = supervised("pidapp.py", "0")  # the script's __main__ block: app.run(..., processes=2)
    port, pids = s.workers(2)
    assert s.proc.pid not in pids.values()  # the supervisor serves nothing itself
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}")) for _ in range(20)]
        assert {ask_pid(ws) for ws in clients} == set(pids.values())
        s.proc.send_signal(signal.SIGINT)  # Ctrl-C
        closes_with_1001(clients)
    assert s.proc.wait(timeout=SHUTDOWN_TIMEOUT + 10) == 0, s.text()


@pytest.mark.timeout(60)
def test_run_with_processes_at_import_time_stops_instead_of_multiplying(tmp_path: Path) -> None:
    # No __main__ guard: each worker would run the supervisor again when it imports the app.
    app = PID_APP.replace('if __name__ == "__main__":\n    ', "").replace("int(sys.argv[1])", "0")
    (tmp_path / "unguarded.py").write_text(textwrap.dedent(app))
    code, err = fails_fast(["unguarded.py"], tmp_path)
    assert code != 0, err
    assert 'call run() under `if __name__ == "__main__":`' in err, err
    assert "could not start" in err, err


def test_the_supervisor_refuses_what_it_cannot_serve() -> None:
    import roomcast
    from roomcast import supervisor

    app = roomcast.Server()
    with pytest.raises(ValueError, match="processes=2 needs a broker"):
        app.run(processes=2)
    with pytest.raises(ValueError, match="at least 1"):
        app.run(processes=0)
    local = roomcast.Server()  # held by no module: workers could not import it
    with pytest.raises(ValueError, match="module level"):
        supervisor.app_spec(local, "processes=2")


@pytest.mark.timeout(60)
def test_a_worker_that_will_not_stop_is_killed_and_the_status_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from roomcast import supervisor

    ignoring = tmp_path / "ignoring"
    stubborn = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ignoring)!r}).touch(); time.sleep(50)"
    )
    workers = supervisor._Supervisor([sys.executable, "-c", stubborn], 1, grace=1.0)

    def sigterm_once_it_ignores_sigterm() -> None:
        wait_for(ignoring.exists, timeout=20, what="the worker to ignore SIGTERM")
        os.kill(os.getpid(), signal.SIGTERM)  # to this process: the supervisor's handler takes it

    threading.Thread(target=sigterm_once_it_ignores_sigterm, daemon=True).start()
    started = time.monotonic()
    assert workers.run() == 1
    assert 1.0 <= time.monotonic() - started < 15
    assert any("did not stop within 1 s; killing it" in line for line in log_lines(caplog))
