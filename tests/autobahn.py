"""The Autobahn|Testsuite's cases against roomcast's echo, driven by kosoku's fuzzing client.

    python tests/autobahn.py [--out build/autobahn] [--include 'CASE'] ...

Starts a roomcast echo server (a sync ``on_message`` hook, the path users take) on a free
port, runs every case but permessage-deflate's (12.* and 13.*), or with ``--compression``
a server with ``compression="deflate"`` and all 517 cases, writes the HTML/JSON report to
``--out``, prints what each behaviour counted and a closing ``autobahn: N passed, M failed``
line, and exits 1 if any case failed.
``NON-STRICT`` (a peer's choice the spec allows, such as failing invalid UTF-8 at the end of a
message rather than at once) and ``INFORMATIONAL`` count as passed, as Autobahn reports them.
Run by ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

import roomcast

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def echo_server(compression: bool) -> roomcast.RunningServer:
    # Autobahn's largest messages are 16 MiB; it answers no pings of ours.
    app = roomcast.Server(
        max_message_size=32 << 20,
        heartbeat_interval=None,
        compression="deflate" if compression else None,
        # Every message compressed: kosoku hands an uncompressed message on a deflate
        # connection (RFC 7692 allows them; roomcast sends those under 128 bytes) to its
        # cases as str, and 12.x/13.x then fail in its own code, not on the wire.
        compression_threshold=0,
    )

    @app.on_message
    def echo(conn: roomcast.Connection, message: object) -> None:
        try:
            conn.send(message)
        except roomcast.ConnectionClosed:
            pass  # the case already closed it (cases that send then close at once)

    return app.start(port=0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/autobahn", help="report folder (replaced)")
    p.add_argument("--include", action="append", default=[], help="case ids or globs")
    p.add_argument(
        "--compression", action="store_true", help="permessage-deflate on: all 517 cases"
    )
    a = p.parse_args()
    kosoku = shutil.which("kosoku", path=str(Path(sys.executable).parent)) or shutil.which("kosoku")
    if kosoku is None and sys.version_info < (3, 10):
        print("autobahn: not run: kosoku has no wheel for CPython < 3.10 (run make test on 3.10+)")
        return 0
    if kosoku is None:
        print("autobahn: kosoku is not installed: pip install 'roomcast[test]'")
        return 1
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    server = echo_server(a.compression)
    try:
        cmd = [kosoku, "-p", "4", "-o", str(out)]
        if not a.compression:
            cmd += ["-x", "12.*", "-x", "13.*"]
        for case in a.include:
            cmd += ["-i", case]
        run = subprocess.run(
            [*cmd, f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=600
        )
    finally:
        server.stop()
    index = out / "index.json"
    if not index.exists():
        print(run.stdout + run.stderr)
        print("autobahn: kosoku wrote no report")
        return 1
    behaviours: collections.Counter[str] = collections.Counter()
    failed = []
    for cases in json.loads(index.read_text()).values():
        for case, result in cases.items():
            outcome = (result["behavior"], result["behaviorClose"])
            behaviours["/".join(outcome)] += 1
            if not set(outcome) <= PASSING:
                failed.append(f"{case}: {outcome[0]}, close {outcome[1]}")
    for outcome, n in sorted(behaviours.items()):
        print(f"autobahn: {n} cases {outcome}")
    for line in sorted(failed):
        print(f"autobahn: FAILED {line} (see {out}/index.html)")
    passed = sum(behaviours.values()) - len(failed)
    mode = "with permessage-deflate" if a.compression else "without compression"
    print(f"autobahn: the cases {mode}; report in {out}")
    print(f"autobahn: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
