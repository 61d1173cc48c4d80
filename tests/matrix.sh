#!/usr/bin/env bash
# The Django tests under Django 4.2 LTS and the newest Django, each in a venv of its own with the
# roomcast wheel that `make test` built. Usage: tests/django/matrix.sh WHEEL VENV_PREFIX
set -euo pipefail
wheel="$1"
prefix="$2"
here="$(cd "$(dirname "$0")" && pwd)"
tools=(pytest pytest-timeout "websockets>=13" pytest-django)

# An interpreter of at least 3.$1: on PATH, else one pyenv installed.
find_python() {
    local minor
    for minor in 13 12 11 10; do
        [ "$minor" -ge "$1" ] || continue
        if command -v "python3.$minor" >/dev/null 2>&1 && "python3.$minor" -c '' 2>/dev/null; then
            echo "python3.$minor"; return 0
        fi
        local root
        root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
        for p in "$root"/versions/3."$minor".*/bin/python3; do
            [ -x "$p" ] && { echo "$p"; return 0; }
        done
    done
    # python3 itself may be new enough.
    python3 -c "import sys; sys.exit(sys.version_info < (3, $1))" && echo python3 && return 0
    return 1
}

run() {
    local name="$1" django="$2" min_minor="$3"
    local python
    if ! python="$(find_python "$min_minor")"; then
        if [ "${CI:-}" = "true" ]; then
            echo "django tests: no Python >= 3.$min_minor for $django" >&2; exit 1
        fi
        echo "django tests: SKIPPED $django (needs Python >= 3.$min_minor; install one with pyenv)"
        return 0
    fi
    local venv="$prefix-$name"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
    "$venv/bin/python" -m pip install -q "$wheel" "$django" "${tools[@]}"
    echo "django tests: $("$venv/bin/python" -c 'import django, sys; print(f"Django {django.get_version()} on Python {sys.version.split()[0]}")')"
    (cd "$here" && "$venv/bin/python" -m pytest -q)
}

run django42 "Django>=4.2,<5" 10
run django-newest "Django>=6.1" 12
