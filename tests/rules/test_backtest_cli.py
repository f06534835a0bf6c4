"""``crisiswatch backtest``: exit codes, .gz, stdin, bad lines, output events."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from rules.backtest_cli import parse_duration_ms
from rules.post import format_rfc3339_ms
from streams.cli import main

RULE = """\
brand: acme
mentions:
  query: 'acme'
rules:
  - id: product-safety
    kind: keyword
    query: 'recall'
    min_count: 2
    window: 10m
    crisis_type: product_quality
    severity: high
    resolve_after: 10m
"""
T0 = 1_790_000_000_000


def _posts(n_recall: int = 3) -> bytes:
    lines = []
    for i in range(n_recall):
        lines.append({"id": f"t:{i}", "source": "t", "text": "acme recall now",
                      "created_at": format_rfc3339_ms(T0 + i * 1000),
                      "author": {"id": f"u{i}", "followers": 10 * i}})  # fmt: skip
    # later traffic moves the watermark far enough to open and resolve
    lines.append({"id": "t:late", "source": "t", "text": "nothing",
                  "created_at": format_rfc3339_ms(T0 + 3_600_000)})  # fmt: skip
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "brands"
    d.mkdir()
    (d / "acme.yaml").write_text(RULE)
    return d


def _events(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_backtest_writes_opened_and_resolved_events(
    rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_bytes(_posts())
    out = tmp_path / "alerts.jsonl"
    assert main(["backtest", "--rules", str(rules_dir), "--out", str(out), str(posts)]) == 0
    events = _events(out.read_text())
    assert [e["type"] for e in events] == [
        "crisiswatch.incident.opened",
        "crisiswatch.incident.resolved",
    ]
    assert events[0]["subject"] == "acme"
    assert events[0]["data"]["window"]["count"] == 3
    assert [s["post_id"] for s in events[0]["data"]["samples"]] == ["t:2", "t:1", "t:0"]
    err = capsys.readouterr().err
    assert "4 posts read, 0 bad lines, 3 posts matched" in err
    assert "1 opened, 0 escalated, 1 resolved" in err


def test_backtest_reads_gzip_and_reports_bad_lines_without_failing(
    rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = b"".join(b'{"id": "x%d"}\n' % i for i in range(25)) + b"not json\n"
    posts = tmp_path / "posts.jsonl.gz"
    posts.write_bytes(gzip.compress(bad + _posts()))
    out = tmp_path / "alerts.jsonl"
    assert main(["backtest", "--rules", str(rules_dir), "--out", str(out), str(posts)]) == 0
    assert len(_events(out.read_text())) == 2
    err = capsys.readouterr().err
    assert "line 1: missing_field:source" in err
    assert "line 20: missing_field:source" in err
    assert "line 21:" not in err
    assert "... and 6 more bad lines" in err
    assert "26 bad lines" in err


def test_backtest_reads_stdin(rules_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "backtest", "--rules", str(rules_dir), "-"],
        input=_posts(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_events(proc.stdout.decode())) == 2


def test_bad_rules_exit_2_with_file_line_col(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "brands"
    d.mkdir()
    (d / "acme.yaml").write_text(RULE.replace("severity: high", "severity: hihg"))
    posts = tmp_path / "p.jsonl"
    posts.write_bytes(_posts())
    assert main(["backtest", "--rules", str(d), str(posts)]) == 2
    err = capsys.readouterr().err
    assert f"{d / 'acme.yaml'}:" in err and "hihg" in err


def test_bad_arguments_exit_2(
    rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backtest", "--rules", str(rules_dir), str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read POSTS" in capsys.readouterr().err
    posts = tmp_path / "p.jsonl"
    posts.write_bytes(_posts())
    assert main(["backtest", "--rules", str(rules_dir), "--lateness", "soon", str(posts)]) == 2
    assert "bad duration 'soon'" in capsys.readouterr().err


def _line(n: str, text: str, ts_ms: int) -> bytes:
    return orjson.dumps(
        {"id": n, "source": "t", "text": text, "created_at": format_rfc3339_ms(ts_ms)}
    )


def test_lateness_decides_what_is_late(rules_dir: Path, tmp_path: Path) -> None:
    lines = [
        _line("m", "acme is fine", T0),
        _line("far", "nothing", T0 + 3_600_000),
        _line("o1", "acme recall", T0 + 3_500_000),  # 100 s behind the newest post
        _line("o2", "acme recall", T0 + 3_500_001),
        _line("end", "nothing", T0 + 5_000_000),
    ]
    posts = tmp_path / "p.jsonl"
    posts.write_bytes(b"\n".join(lines) + b"\n")
    strict, loose = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["backtest", "--rules", str(rules_dir), "--out", str(strict), str(posts)]) == 0
    assert main(["backtest", "--rules", str(rules_dir), "--lateness", "10m", "--out", str(loose),
                 str(posts)]) == 0  # fmt: skip
    assert _events(strict.read_text()) == []  # 100 s late with 60 s allowed: dropped
    # counted; the final watermark (end - 10 min) is before it could resolve: stays open
    assert [e["type"] for e in _events(loose.read_text())] == ["crisiswatch.incident.opened"]


def test_parse_duration() -> None:
    assert parse_duration_ms("60s") == 60_000
    assert parse_duration_ms("10m") == 600_000
    assert parse_duration_ms("500ms") == 500
    with pytest.raises(ValueError, match="expected a number with a unit"):
        parse_duration_ms("5")


def test_stdin_wrapper_accepts_plain_bytes() -> None:
    from rules.backtest_cli import read_lines

    assert list(read_lines(io.BytesIO(b"a\n\n b \n"))) == [(1, b"a"), (3, b"b")]


def test_truncated_gzip_exits_2_with_the_lines_read_so_far(
    rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filler = b"".join(_line(f"f{i}", f"acme filler {i:06d}", T0 + i) + b"\n" for i in range(3000))
    blob = gzip.compress(filler + _posts(), mtime=0)
    posts = tmp_path / "cut.jsonl.gz"
    posts.write_bytes(blob[: len(blob) // 2])  # cut mid-stream: no end-of-stream marker
    out = tmp_path / "alerts.jsonl"
    assert main(["backtest", "--rules", str(rules_dir), "--out", str(out), str(posts)]) == 2
    err = capsys.readouterr().err
    assert f"reading POSTS {str(posts)!r} failed after line " in err
    assert "truncated or corrupt" in err and "EOFError" in err
    read = int(err.split("failed after line ")[1].split(" ")[0].replace(",", ""))
    assert 0 < read < 3000  # some complete lines were read, not all of them
    assert f"{read:,} posts read, 0 bad lines" in err
