"""The commands the READMEs and docs/*.md show run as written.

Every ``crisiswatch`` line of a ```sh block is parsed by the real CLI parser
(streams/cli.py with each command's own arguments), so a wrong flag, a missing
argument or a bad value fails here; the ones that need no broker (``rules
check``, ``backtest``) are run for real from the repository root.  ``make``
targets and the test files a pytest line names must exist too.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.cli import _build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "README.zh-CN.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = (("rules", "check"), ("backtest",))  # need no broker, finish in seconds
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def _sh_lines(path: Path, *, plain: bool) -> list[str]:
    """Lines of ```sh / ```bash blocks (and unlabelled ones with ``plain``: those also
    hold usage synopses), continuations joined, comments dropped."""
    blocks: list[str] = []
    lang: str | None = None  # None: outside a fence
    for raw in path.read_text(encoding="utf-8").splitlines():
        fence = re.match(r"^```\s*(\S*)", raw)
        if fence and lang is None:
            lang = fence.group(1)
            blocks.append("")
        elif fence:
            if lang not in ({"sh", "bash", "shell", ""} if plain else {"sh", "bash", "shell"}):
                blocks.pop()
            lang = None
        elif lang is not None:
            blocks[-1] += raw + "\n"
    if lang is not None:
        blocks.pop()  # unclosed fence
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


def _argv(line: str) -> list[str]:
    """The command's words without leading VAR=value assignments."""
    words = shlex.split(line)
    while words and _ENV.match(words[0]):
        words.pop(0)
    # stop at a shell operator (pipes, redirections)
    for i, word in enumerate(words):
        if word in {"|", ">", ">>", "<", "&&", "||", ";", "&"}:
            return words[:i]
    return words


def _cases(kind: str) -> list[Any]:
    cases = []
    for path in DOCS:
        for line in _sh_lines(path, plain=kind != "crisiswatch"):
            try:
                argv = _argv(line)
            except ValueError:  # unlabelled blocks hold text that is not shell
                if kind == "crisiswatch":
                    raise
                continue
            if not argv:
                continue
            program = {
                "crisiswatch": "crisiswatch",
                ".venv/bin/crisiswatch": "crisiswatch",
                "make": "make",
            }.get(argv[0], "pytest" if argv[0].endswith("pytest") else "")
            if program == kind:
                cases.append(pytest.param(argv[1:], id=f"{path.name}: {line[:70]}"))
    return cases


CLI_CASES = _cases("crisiswatch")
MAKE_CASES = _cases("make")
PYTEST_CASES = _cases("pytest")

SAMPLE_POSTS = "samples/demo-posts.jsonl.gz"
"""Stands in for a Posts file of the reader's own in a documented command."""


def _parse(argv: list[str]) -> tuple[tuple[str, ...] | None, str]:
    """(command path or None, argparse's complaint) for a crisiswatch argv."""
    parser, chosen = _build_parser(argv)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        return None, err.getvalue().strip()
    path = getattr(args, "_path", None)
    return (path if path == chosen else None), ""


def test_docs_show_enough_commands() -> None:
    assert len(CLI_CASES) >= 15
    assert MAKE_CASES


@pytest.mark.parametrize("argv", CLI_CASES)
def test_crisiswatch_command_parses(argv: list[str]) -> None:
    path, complaint = _parse(argv)
    assert path is not None, f"'crisiswatch {shlex.join(argv)}' does not parse: {complaint}"


def test_the_parse_check_catches_mistakes() -> None:
    assert _parse(["alerts", "tail", "--follow"])[0] is None
    assert _parse(["backtest"])[0] is None  # the Posts file is required
    assert _parse(["connect", "--metrics-port", "many"])[0] is None
    assert _parse(["rules", "check", "brands"])[0] == ("rules", "check")


@pytest.mark.parametrize(
    "argv",
    [c for c in CLI_CASES if any(tuple(c.values[0][: len(p)]) == p for p in RUNNABLE)],
)
def test_local_command_runs_as_written(argv: list[str], tmp_path: Path) -> None:
    run_argv = list(argv)
    out = None
    if "--out" in run_argv:  # written to a temporary folder, then checked
        i = run_argv.index("--out") + 1
        out = tmp_path / Path(run_argv[i]).name
        run_argv[i] = str(out)
    missing = [
        a
        for a in run_argv
        if re.search(r"\.(jsonl|gz|csv)$", a) and a != str(out) and not (ROOT / a).exists()
    ]
    bad_samples = [a for a in missing if a.startswith("samples/")]
    assert not bad_samples, f"'crisiswatch {shlex.join(argv)}': no such sample {bad_samples}"
    # a file that stands for the reader's own Posts is replaced by the bundled sample
    run_argv = [SAMPLE_POSTS if a in missing else a for a in run_argv]
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", *run_argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"crisiswatch {shlex.join(argv)}: {result.stderr[-800:]}"
    if out is not None:
        assert out.exists() and out.stat().st_size > 0, f"--out {out} was not written"


@pytest.mark.parametrize("argv", MAKE_CASES)
def test_make_target_exists(argv: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    for target in (a for a in argv if not a.startswith("-") and "=" not in a):
        assert target in targets, f"make {target}: no such target in the Makefile"


@pytest.mark.parametrize("argv", PYTEST_CASES)
def test_pytest_paths_exist(argv: list[str]) -> None:
    for arg in argv:
        if not arg.startswith("-") and arg.startswith("tests"):
            assert (ROOT / arg.split("::")[0]).exists(), f"pytest path {arg} does not exist"
