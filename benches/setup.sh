#!/usr/bin/env bash
# Builds the load generator and the pure-Rust reference server, and installs roomcast and the
# peers into benches/.venv (and Node's ws into benches/servers/node), from the registries.
set -euo pipefail
cd "$(dirname "$0")"
echo "bench setup: building loadgen and refserver" >&2
cargo build --release --locked -q
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
# socketify loads libuv at import time.
if ! ldconfig -p | grep -q 'libuv\.so\.1'; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq libuv1) >&2 || echo "bench setup: libuv1 could not be installed; socketify will be reported missing" >&2
  else
    echo "bench setup: libuv1 missing and not root; socketify will be reported missing" >&2
  fi
fi
echo "bench setup: installing roomcast and the Python peers" >&2
.venv/bin/python -m pip install -q -r servers/requirements.txt matplotlib trustme || echo "bench setup: some peers failed to install; they will be reported missing" >&2
.venv/bin/python -m pip install -q ..
if command -v node >/dev/null && command -v npm >/dev/null; then
  (cd servers/node && npm ci --silent --no-audit --no-fund) >&2 || echo "bench setup: npm ci failed; node-ws will be reported missing" >&2
else
  echo "bench setup: node not found; node-ws will be reported missing" >&2
fi
