"""The scenario generator: seeded, fast, and its crises are detected by the example rules."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from rules.scenario import generate

BRANDS = Path(__file__).resolve().parents[2] / "brands"


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    from rules.loader import load_rules

    return load_rules(BRANDS)


def test_same_seed_same_scenario_and_different_seed_differs(rules) -> None:  # type: ignore[no-untyped-def]
    a = generate(rules, seed=3, days=3, mentions_per_min=0.3)
    b = generate(rules, seed=3, days=3, mentions_per_min=0.3)
    c = generate(rules, seed=4, days=3, mentions_per_min=0.3)
    assert a.posts == b.posts and a.truth() == b.truth()
    assert a.posts != c.posts
    assert [p.created_at_ms for p in a.posts] == sorted(p.created_at_ms for p in a.posts)
    kinds = {i.kind for i in a.injected}
    assert kinds == {"crisis", "daily_peak", "homonym", "no_brand", "angry_user"}
    assert {p.lang for p in a.posts} == {"en", "zh"}


def test_generation_is_fast(rules) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    s = generate(rules, seed=1, days=8, mentions_per_min=3.0, noise_per_min=3.0)
    elapsed = time.perf_counter() - started
    assert len(s.posts) > 90_000
    assert elapsed < 15, f"{len(s.posts)} posts took {elapsed:.1f} s"


def test_injected_crises_are_detected_and_traps_do_not_alert(rules) -> None:  # type: ignore[no-untyped-def]
    from rules.evaluation import run_scenario, score

    scenario = generate(rules, seed=11, days=4)
    result = score(rules, scenario, run_scenario(rules, scenario))
    assert len(result.crises) == 8
    missed = [
        (c.crisis.brand, c.crisis.crisis_type) for c in result.crises if c.detected_ms is None
    ]
    assert missed == []
    assert result.median_ttd_ms is not None and result.median_ttd_ms < 300_000
    assert result.trap_incidents == []


def test_scenario_cli_writes_posts_and_truth(tmp_path: Path) -> None:
    from streams.cli import main

    out, truth = tmp_path / "posts.jsonl", tmp_path / "truth.json"
    argv = ["scenario", "--rules", str(BRANDS), "--out", str(out), "--truth", str(truth),
            "--days", "3", "--rate", "0.2", "--seed", "9"]  # fmt: skip
    assert main(argv) == 0
    lines = out.read_bytes().splitlines()
    first = orjson.loads(lines[0])
    assert {"id", "source", "text", "created_at", "author", "lang"} <= set(first)
    t = orjson.loads(truth.read_bytes())
    assert t["seed"] == 9 and t["posts"] == len(lines) and len(t["crises"]) == 8
