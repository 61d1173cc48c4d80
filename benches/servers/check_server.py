"""Check that a benchmark server implements benches/PROTOCOL.md.

Starts the server command with the port appended as its last argument (or put
{port} in the command where it belongs), waits until the port accepts TCP,
runs the checks, prints PASS/FAIL per check, stops the server and exits 1 if
any check failed. Needs the `websockets` package (its sync client).

  python check_server.py [--port N] [--cwd DIR] -- CMD [ARGS...]
  python check_server.py -- /tmp/benchvenv/bin/python websockets_server.py
  python check_server.py --cwd node -- node server.js
"""

import argparse
import base64
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from websockets.sync.client import connect

HOST = "127.0.0.1"
WAIT = 3.0  # seconds to wait for a message that should arrive
QUIET = 0.3  # seconds of silence that count as "nothing arrives"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(proc, port, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not accept TCP within the deadline")


class Checker:
    def __init__(self, port):
        self.port, self.failures, self.clients = port, [], contextlib.ExitStack()

    def ws(self, path, **kwargs):
        kwargs.setdefault("compression", None)
        url = f"ws://{HOST}:{self.port}{path}"
        return self.clients.enter_context(connect(url, max_size=None, open_timeout=5, **kwargs))

    def run(self, name, fn):
        try:
            fn()
            print(f"PASS {name}", flush=True)
        except Exception as exc:  # report every failure, keep going
            self.failures.append(name)
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        finally:
            self.clients.close()


def expect(conn, want, what):
    """Read from conn until `want` arrives (skipping readiness probes)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = conn.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(got, str) and got.startswith("probe-") and want != got:
            continue
        if type(got) is not type(want) or got != want:
            wanted, seen = (
                f"{type(want).__name__} {want[:40]!r}",
                f"{type(got).__name__} {got[:40]!r}",
            )
            raise AssertionError(f"{what}: expected {wanted}, got {seen}")
        return


def expect_silence(conn, what):
    try:
        got = conn.recv(timeout=QUIET)
    except TimeoutError:
        return
    raise AssertionError(f"{what}: unexpected message {got[:40]!r}")


def until_joined(sender, receivers):
    """Members join their room asynchronously: probe until all of them hear."""
    deadline, pending, n = time.monotonic() + WAIT, set(range(len(receivers))), 0
    while pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} member(s) never received a broadcast")
        n += 1
        sender.send(f"probe-{n}")
        for i in list(pending):
            try:
                receivers[i].recv(timeout=0.05)
                pending.discard(i)
            except TimeoutError:
                pass


def raw_member(port, path):
    """A hand-made client socket, upgraded on `path`, for abrupt disconnects."""
    sock = socket.create_connection((HOST, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"{path}: connection closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"{path}: handshake answered {head.splitlines()[0]!r}")
    return sock


def masked_frame(opcode, payload, length=None):
    length = len(payload) if length is None else length
    head = bytes([0x80 | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def reset(sock):
    """Close with RST and no closing handshake: an abrupt disconnect."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def checks(c, proc):
    big = os.urandom(1 << 20)

    def no_compression():
        conn = c.ws("/echo", compression="deflate")  # offer permessage-deflate
        ext = conn.response.headers.get("Sec-WebSocket-Extensions")
        assert not ext, f"server negotiated {ext!r}"

    def echo_text_binary():
        e = c.ws("/echo")
        for msg in ("hello ✓ text", bytes(range(256)) * 4, "", b""):
            e.send(msg)
            expect(e, msg, "echo")

    def echo_1mib():
        e = c.ws("/echo")
        for msg in (big, "x" * (1 << 20)):
            e.send(msg)
            expect(e, msg, "1 MiB echo")

    def echo_pipelined():
        e = c.ws("/echo")
        msgs = [f"m{i}" if i % 2 else f"b{i}".encode() for i in range(200)]
        for msg in msgs:
            e.send(msg)
        for msg in msgs:
            expect(e, msg, "pipelined echo")

    def pub_to_subs():
        subs, p = [c.ws("/sub"), c.ws("/sub")], c.ws("/pub")
        until_joined(p, subs)
        for msg in ("to subs", b"\x00\x01 to subs", big):
            p.send(msg)
            for s in subs:
                expect(s, msg, "sub")
        expect_silence(p, "pub is not a member")
        subs[0].send("ignored")
        for conn in [*subs, p]:
            expect_silence(conn, "messages on /sub are ignored")

    def chat_includes_sender():
        a, b = c.ws("/chat"), c.ws("/chat")
        until_joined(a, [a, b])
        for sender, msg in ((a, "chat text"), (b, b"chat \xff binary")):
            sender.send(msg)
            for conn in (a, b):
                expect(conn, msg, "chat member")

    def leave_on_close():
        s1, s2, p = c.ws("/sub"), c.ws("/sub"), c.ws("/pub")
        until_joined(p, [s1, s2])
        s2.close()
        p.send("after a member left")
        expect(s1, "after a member left", "remaining sub")

    def abrupt_disconnects():
        live, p = c.ws("/sub"), c.ws("/pub")
        socket.create_connection((HOST, c.port)).close()  # TCP only, no HTTP
        try:  # a path outside the protocol: refused or accepted, the server must live on
            reset(raw_member(c.port, "/no-such-path"))
        except (AssertionError, OSError):
            pass
        gone = [raw_member(c.port, path) for path in ("/sub", "/sub", "/chat", "/echo", "/pub")]
        half = raw_member(c.port, "/echo")
        half.sendall(masked_frame(2, b"0123456789", length=1000)[:20])  # frame cut short
        talk = raw_member(c.port, "/echo")
        talk.sendall(masked_frame(2, big))  # the echo goes to a dead socket
        until_joined(p, [live])
        time.sleep(0.1)  # let the raw members join their rooms too
        for sock in [*gone, half, talk]:
            reset(sock)
        for msg in ("to the dead and the living", big, "last"):
            p.send(msg)
        expect(live, "to the dead and the living", "live sub after resets")
        expect(live, big, "live sub after resets")
        expect(live, "last", "live sub after resets")
        time.sleep(0.3)
        assert proc.poll() is None, f"server died with code {proc.returncode}"
        e = c.ws("/echo")
        e.send("still here")
        expect(e, "still here", "echo after resets")

    for fn in (
        no_compression,
        echo_text_binary,
        echo_1mib,
        echo_pipelined,
        pub_to_subs,
        chat_includes_sender,
        leave_on_close,
        abrupt_disconnects,
    ):
        c.run(fn.__name__, fn)

    def server_alive():
        assert proc.poll() is None, f"server exited with code {proc.returncode}"

    c.run("server_alive", server_alive)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, help="port for the server (default: a free one)")
    ap.add_argument("--cwd", help="directory to start the server in")
    ap.add_argument("--timeout", type=float, default=20, help="seconds to wait for the port")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the server command")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the server command after --")
    port = args.port or free_port()
    cmd = (
        [a.replace("{port}", str(port)) for a in cmd]
        if any("{port}" in a for a in cmd)
        else [*cmd, str(port)]
    )
    print(f"starting: {' '.join(cmd)}", flush=True)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        cmd, cwd=args.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    c = Checker(port)
    try:
        wait_for_port(proc, port, time.monotonic() + args.timeout)
        checks(c, proc)
    except Exception as exc:
        c.failures.append("startup")
        print(f"FAIL startup: {exc}", flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log.seek(0)
    output = log.read().decode(errors="replace")
    if output.strip() and (c.failures or "Traceback" in output):
        print("--- server output (last 3000 chars) ---\n" + output[-3000:], flush=True)
    print(
        f"{'FAILED' if c.failures else 'PASSED'}: {len(c.failures)} failed"
        + (f" ({', '.join(c.failures)})" if c.failures else "")
    )
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
