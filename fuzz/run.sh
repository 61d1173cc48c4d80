#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named) for FUZZ_SECONDS each and prints one summary line
# per target. Needs the nightly toolchain (libFuzzer's sanitizer flags); without it, says so and
# succeeds, so that `make fuzz` and CI work on machines that only have stable.
# FUZZ_BUILD_FLAGS goes to `cargo fuzz build/run` (e.g. "--sanitizer none" for a faster run);
# FUZZ_TARGET_DIR builds outside fuzz/target, so that fresh clones (CI) can reuse a build.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
read -r -a flags <<<"${FUZZ_BUILD_FLAGS:-}"
[ -z "${FUZZ_TARGET_DIR:-}" ] || flags+=(--target-dir "$FUZZ_TARGET_DIR")
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(handshake frames envelope chat_frame http_body)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: nightly toolchain not available; skipped"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

mkdir -p artifacts
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="artifacts/$t.log"
    status=0
    # corpus/ gathers what the fuzzer learns (git-ignored); seeds/ is read only.
    t0=$(date +%s)
    cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    line="fuzz: $t: ${runs:-?} runs in $(($(date +%s) - t0)) s, coverage ${cov:-?} edges, corpus $(ls "corpus/$t" | wc -l) inputs"
    if [ "$status" -ne 0 ]; then
        line="$line: FAILED (exit $status; log fuzz/$log)"
        failed+=("$t")
        # What CI prints must be enough to reproduce: the panic, and the input itself.
        grep -A1 -E 'panicked at|^==[0-9]+==ERROR|^ERROR: libFuzzer' "$log" | head -n 6 >&2 ||
            tail -n 40 "$log" >&2
        find "artifacts/$t" -type f -newermt "@$t0" | while read -r a; do
            echo "fuzz: $a, base64 (save it and replay it):" >&2
            base64 -w 0 "$a" | head -c 8000 >&2
            echo >&2
        done
    fi
    summary+=("$line")
    echo "$line"
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run <target> <file>)" >&2
    exit 1
fi
