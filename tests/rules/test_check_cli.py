"""`crisiswatch rules check DIR`: exit codes and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import main

BRANDS = Path(__file__).resolve().parents[2] / "brands"


def test_example_brands_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(BRANDS)]) == 0
    out, err = capsys.readouterr()
    assert out == f"ok: 2 brands, 9 rules in {BRANDS}\n"
    assert err == ""


def test_problems_go_to_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(
        "brand: a\nmentions:\n  query: acme AND\nrules:\n  - id: r\n    kind: keyword\n"
        "    query: x\n    crisis_type: other\n    severity: hihg\n",
        encoding="utf-8",
    )
    assert main(["rules", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    path = tmp_path / "a.yaml"
    assert err.splitlines() == [
        f"{path}:3:18: bad query in 'mentions.query': expected a term or '(' after 'AND'; "
        "found end of query",
        f"{path}:9:15: unknown severity 'hihg' (expected one of low, medium, high, critical)",
        f"2 problems in {tmp_path}",
    ]


def test_missing_directory_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "nope")]) == 2
    _, err = capsys.readouterr()
    assert "rules directory does not exist" in err and "nope" in err


def test_singular_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yml").write_text("brand: a\nmentions: {query: acme}\n", encoding="utf-8")
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"ok: 1 brand, 0 rules in {tmp_path}\n"
