"""The guide cannot rot: every code block in docs/*.md and README.md runs here.

- ```python blocks are executed, each in a fresh interpreter, in order per page (a page's
  blocks share one process, so a later block may use an earlier one's names). ``app.run()``
  starts the server on a free port, checks it answers a WebSocket, and stops it, so a
  "serve forever" line completes.
- ```python test blocks are pytest files: they are written out and must pass under pytest.
- ```sh blocks are checked, not run (they install things or serve forever): every ``roomcast``
  command parses with the real CLI, every ``manage.py runws`` address parses, every ``make``
  target exists, every ``pip install`` extra is declared in pyproject.toml.
- ```ini blocks (systemd units): the ``ExecStart=`` command is checked like a shell line.
- Other blocks (nginx, JSON, text) are configuration shown to the reader, not run; they must be
  in a language named here, so a new kind gets a decision.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
SHOWN_ONLY = {"nginx", "ini", "systemd", "json", "text", "js", "javascript", "html", "toml"}
BLOCK = re.compile(r"^```([\w-]*)([^\n]*)\n(.*?)^```", re.S | re.M)

# Runs before a page's python blocks: app.run() serves briefly instead of forever.
PRELUDE = """
import roomcast.server as _server
from websockets.sync.client import connect as _connect

def _run_briefly(self, host="127.0.0.1", port=8765):
    running = self.start("127.0.0.1", 0)
    try:
        with _connect(running.url + "/", open_timeout=5):
            pass
    finally:
        running.stop(timeout=2.0)

_server.Server.run = _run_briefly
"""


def blocks(page: Path) -> list[tuple[str, str, str]]:
    """(language, info, code) of each fenced block."""
    return [(m[1].lower(), m[2].strip(), m[3]) for m in BLOCK.finditer(page.read_text("utf-8"))]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def pages_with(*langs: str, test: bool = False) -> list[Path]:
    """The pages that have blocks of these languages (a page without any is not a test case)."""
    return [
        page
        for page in PAGES
        if any(lang in langs and (info == "test") == test for lang, info, _ in blocks(page))
    ]


SHELLS = ("sh", "bash", "shell", "console")


@pytest.mark.parametrize("page", pages_with("python"), ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    code = [c for lang, info, c in blocks(page) if lang == "python" and info != "test"]
    script = PRELUDE + "\n".join(
        f"# --- block {i}\n{textwrap.dedent(c)}" for i, c in enumerate(code)
    )
    (tmp_path / "page.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "page.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{page_id(page)}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("page", pages_with("python", test=True), ids=page_id)
def test_python_test_blocks_pass(page: Path, tmp_path: Path) -> None:
    tests = [c for lang, info, c in blocks(page) if lang == "python" and info == "test"]
    for i, code in enumerate(tests):
        (tmp_path / f"test_block_{i}.py").write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ASYNCIO_LOOP, "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{page_id(page)}:\n{done.stdout}\n{done.stderr}"


# pytest-asyncio warns unless the loop scope is set; a user's project sets it in its config.
ASYNCIO_LOOP = ["-o", "asyncio_default_fixture_loop_scope=function"]


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = ", section, re.M))


def check_shell_line(line: str) -> None:
    from roomcast.cli import parser

    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[0] == "roomcast":
        try:
            parser().parse_args(words[1:])
        except SystemExit as exc:
            assert exc.code == 0, f"roomcast does not accept: {line}"
    elif words[:2] in (["python", "manage.py"], ["./manage.py", "runws"]) and "runws" in words:
        from roomcast.django.management.commands.runws import parse_addrport

        args = [w for w in words[words.index("runws") + 1 :] if not w.startswith("-")]
        if args:
            parse_addrport(args[0])
    elif words[0] == "make":
        for target in words[1:]:
            if "=" not in target:
                assert target in _makefile_targets(), f"no make target {target!r}: {line}"
    elif words[:2] == ["pip", "install"]:
        for spec in words[2:]:
            m = re.match(r"[\"']?roomcast\[([\w,-]+)\]", spec)
            if m:
                missing = set(m[1].split(",")) - _extras()
                assert not missing, f"pyproject.toml has no extra {missing}: {line}"


@pytest.mark.parametrize("page", pages_with(*SHELLS), ids=page_id)
def test_shell_blocks_name_real_commands(page: Path) -> None:
    found = [c for lang, _, c in blocks(page) if lang in SHELLS]
    for code in found:
        for line in code.replace("\\\n", " ").splitlines():
            check_shell_line(line.strip().removeprefix("$ "))


@pytest.mark.parametrize("page", pages_with("ini"), ids=page_id)
def test_service_units_start_real_commands(page: Path) -> None:
    for lang, _, code in blocks(page):
        for line in code.splitlines() if lang == "ini" else []:
            if line.startswith("ExecStart="):
                command = line.removeprefix("ExecStart=").split()
                check_shell_line(" ".join([Path(command[0]).name, *command[1:]]))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_has_a_known_kind(page: Path) -> None:
    for lang, _, code in blocks(page):
        known = lang == "python" or lang in SHELLS or lang in SHOWN_ONLY
        assert known, f"{page_id(page)}: a ```{lang or '(no language)'} block: {code[:60]!r}"
