# One entry point for humans; CI (.ci/run) runs `make test lint` in a fresh venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8765

.PHONY: run test wheel lint dev bench bench-quick fuzz fuzz-ci soak soak-quick clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Install roomcast and serve the chat demo (page + chat WebSocket) on http://127.0.0.1:$(PORT)/.
run: $(PY)
	$(PY) -m pip install -q .
	$(VENV)/bin/roomcast demo --port $(PORT)

WHEELS := $(VENV)-wheels

# Build the roomcast wheel once; every test venv installs this one.
wheel: $(PY)
	rm -rf $(WHEELS)
	$(PY) -m pip wheel -q --no-deps -w $(WHEELS) .

# Install roomcast with its test tools, then run every test: the Rust core; the Python suite
# here; the Autobahn cases against the echo, without compression (report in build/autobahn)
# and with permessage-deflate (build/autobahn-deflate); the Python suite on
# the oldest and newest CPython the machine has; the Django suite under Django 4.2
# LTS and the newest Django (tests/matrix.sh: a venv each, all from the one wheel).
test: wheel
	$(PY) -m pip install -q "$$(ls $(WHEELS)/roomcast-*.whl)[test]"
	cargo test --locked
	$(PY) -m pytest
	$(PY) tests/autobahn.py --out build/autobahn
	$(PY) tests/autobahn.py --compression --out build/autobahn-deflate
	tests/matrix.sh pythons "$$(ls $(WHEELS)/roomcast-*.whl)" $(VENV)
	tests/matrix.sh django "$$(ls $(WHEELS)/roomcast-*.whl)" $(VENV)

# Editable install for working on the package (rebuild the Rust part with `maturin develop`).
dev: $(PY)
	$(PY) -m pip install -q -e '.[dev]'

lint: wheel
	$(PY) -m pip install -q "$$(ls $(WHEELS)/roomcast-*.whl)[dev]"
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --locked --features python --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests examples
	$(VENV)/bin/ruff format --check python tests examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest roomcast._roomcast --allowlist stubtest-allowlist.txt

# Benchmarks side by side with the peers (never part of the tests); writes docs/benchmarks.md.
bench:
	bash benches/setup.sh
	benches/.venv/bin/python benches/run.py

bench-quick:
	bash benches/setup.sh
	benches/.venv/bin/python benches/run.py --quick

# libFuzzer on the code that reads client bytes (docs/fuzzing.md): FUZZ_SECONDS per target.
# Needs the nightly toolchain; without it, says so and succeeds. Installs cargo-fuzz if missing.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# The short run CI does after the tests: without AddressSanitizer or debug info, which makes
# the first build about a third cheaper (the crate forbids `unsafe`; panics are still found).
FUZZ_TARGET_DIR ?=
fuzz-ci:
	FUZZ_SECONDS=15 FUZZ_BUILD_FLAGS="--sanitizer none" CARGO_PROFILE_RELEASE_DEBUG=false \
		FUZZ_TARGET_DIR="$(FUZZ_TARGET_DIR)" fuzz/run.sh

# Soak and churn (never part of the tests): a million connections come and go through one
# server with stayers connected; RSS, fds and tasks must come back, no stayer may miss a
# message (benches/soak.py, docs/soak.md). SOAK_ARGS passes options, e.g. SOAK_ARGS=--write-docs.
SOAK_ARGS ?=
SOAK_PY := benches/.venv/bin/python

$(SOAK_PY):
	python3 -m venv benches/.venv

soak: $(SOAK_PY)
	cd benches && cargo build --release --locked -q -p loadgen
	$(SOAK_PY) -m pip install -q .
	$(SOAK_PY) benches/soak.py $(SOAK_ARGS)

soak-quick:
	$(MAKE) soak SOAK_ARGS="--quick $(SOAK_ARGS)"

clean:
	rm -rf $(VENV) $(VENV)-wheels $(VENV)-py-* $(VENV)-django* target fuzz/target
