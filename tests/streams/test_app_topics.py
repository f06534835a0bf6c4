"""The topics ``build_app`` declares for faust: only the detect agent's stream acks."""

from __future__ import annotations

from pathlib import Path

from streams.app import build_app
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_changelog_is_not_an_acking_topic_and_the_matches_stream_is(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CRISISWATCH_STORE": "memory://",
            "CRISISWATCH_DATA_DIR": str(tmp_path),
            "CRISISWATCH_RULES_DIR": str(ROOT / "brands"),
        }
    )
    app = build_app(settings).app
    changelog = app.tables["brand_state"].changelog_topic
    assert changelog.get_topic_name() == "crisiswatch.brand-state-changelog"
    # read only to restore the table: as an acking topic, faust's livelock check logged an
    # ERROR for each of its partitions every 2.5 s from the worker's fifth minute on
    assert changelog.acks is False
    detect = app.agents["detect"]
    assert detect.channel.acks is True  # its offsets are committed as its events are acked
    assert detect.channel.get_topic_name() == "crisiswatch.matches"
