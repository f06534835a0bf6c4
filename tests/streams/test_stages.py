"""The worker's stages with plain calls: dead letters, hits, watermark ticks, alert events."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from rules.engine import Engine
from rules.loader import load_rules
from rules.model import Hit
from rules.post import format_rfc3339_ms, post_from_dict
from rules.state import BrandState, history_name, segment_name
from rules.watermark import PartitionReport
from streams.codecs import Tick, decode_items, decode_record, encode_batch, encode_hit, encode_tick
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.stages import DetectOutput, DetectStage, MatchStage, Record, partition_for
from tests.integration import scenario

PARTS = 4


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return scenario.write_rules(tmp_path / "brands")


def make(rules_dir: Path) -> tuple[WorkerMetrics, RuleHolder, MatchStage, DetectStage, dict]:
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(rules_dir, metrics, lateness_ms=60_000, step_ms=10_000)
    table: dict[str, bytes] = {}
    match = MatchStage(holder, metrics, idle_after_ms=1_000, now_ms=lambda: 1_000)
    detect = DetectStage(holder, metrics, partitions=PARTS, load=table.get, now_ms=lambda: 1_000)
    return metrics, holder, match, detect, table


def test_invalid_posts_become_dead_letters_with_contract_fields(rules_dir: Path) -> None:
    metrics, _, match, _, _ = make(rules_dir)
    records = [
        Record("p.posts", 1, 7 + i, b"k%d" % i, value)
        for i, (value, _) in enumerate(scenario.BAD_VALUES)
    ]
    out = match.process(records)
    assert out.hits == []
    reasons = [dead["reason"] for _, dead in out.dead_letters]
    assert reasons == [reason for _, reason in scenario.BAD_VALUES]
    key, first = out.dead_letters[0]
    assert key == b"k0"
    assert set(first) == {
        "reason",
        "detail",
        "stage",
        "topic",
        "partition",
        "offset",
        "received_at",
        "payload_b64",
    }
    assert (first["stage"], first["topic"], first["partition"], first["offset"]) == (
        "matcher",
        "p.posts",
        1,
        7,
    )
    total = sum(
        metrics.registry.get_sample_value(
            "crisiswatch_dead_letters_total", {"stage": "matcher", "reason": r.split(":")[0]}
        )
        or 0
        for r in {r for _, r in scenario.BAD_VALUES}
    )
    assert total == len(scenario.BAD_VALUES)


def matches_records(match: MatchStage, items: list[dict], batched: bool = False) -> list[Record]:
    """The scenario's posts through the match stage: the records of the matches topic,
    a record per hit and per tick, or (``batched``, as the match loop sends them) one
    record per partition holding its hits as rows and then the tick."""
    match.clock.assign(set(range(PARTS)), now_ms=0)
    matches: list[Record] = []
    offset = 0
    for start in range(0, len(items), 50):
        chunk = items[start : start + 50]
        records = [
            Record("p.posts", partition_for(str(p["id"]), PARTS), start + i, None, orjson.dumps(p))
            for i, p in enumerate(chunk)
        ]
        out = match.process(records)
        if batched:
            match.commit_event_times(out.event_times)
            report = Tick("s1", match.clock.report(1_000))
            for q in range(PARTS):
                hits = [h for h in out.hits if partition_for(h.brand, PARTS) == q]
                matches.append(Record("p.matches", q, offset, None, encode_batch(hits, report)))
                offset += 1
            continue
        for hit in out.hits:
            matches.append(
                Record("p.matches", partition_for(hit.brand, PARTS), offset, None, encode_hit(hit))
            )
            offset += 1
        match.commit_event_times(out.event_times)
        tick = encode_tick(Tick("s1", match.clock.report(1_000)))
        matches.extend(Record("p.matches", q, offset, None, tick) for q in range(PARTS))
    # the stream goes quiet: every partition idle, final watermark = newest - lateness
    quiet = encode_tick(Tick("s1", match.clock.report(10_000)))
    matches.extend(Record("p.matches", q, offset, None, quiet) for q in range(PARTS))
    return matches


def engine_events(rules_dir: Path, items: list[dict]) -> list:
    """What ``crisiswatch backtest`` (the engine) decides for these posts."""
    engine = Engine(load_rules(rules_dir))
    expected = []
    for item in items:
        expected.extend(engine.process(post_from_dict(item)))
    expected.extend(engine.finish())
    return expected


@pytest.mark.parametrize("batched", [False, True], ids=["hit-records", "batch-records"])
def test_stages_decide_what_the_engine_decides(rules_dir: Path, batched: bool) -> None:
    """Posts through MatchStage -> matches records -> DetectStage == Engine (backtest),
    with hits sent one per record (objects) or in batches (rows)."""
    items = scenario.posts()
    expected = engine_events(rules_dir, items)

    metrics, _, match, detect, table = make(rules_dir)
    matches = matches_records(match, items, batched)
    assert (b'"hits":[[' in matches[0].value) == batched  # rows in batches

    got = []
    for start in range(0, len(matches), 64):
        out = detect.process(matches[start : start + 64])
        got.extend(out.events)
        for brand in out.dirty:  # what the agent writes to the table
            table[brand] = detect.dump(brand)
    # the same events; order is defined per brand (the alert topic is keyed by brand)
    assert {e.id: e.to_cloudevent() for e in got} == {e.id: e.to_cloudevent() for e in expected}
    assert len(got) == len(expected)
    for brand in ("acme", "zhongyuan"):
        assert [e.id for e in got if e.brand == brand] == [
            e.id for e in expected if e.brand == brand
        ]
    assert metrics.registry.get_sample_value(
        "crisiswatch_matches_total", {"brand": "acme", "rule": "product-safety"}
    ) == sum(
        1
        for p in items
        if "recall" in str(p["text"]).lower()
        or "召回" in str(p["text"])
        or "poisoning" in str(p["text"]).lower()
        or "contaminat" in str(p["text"]).lower()
    )


def test_steps_in_slices_equal_one_process_call(rules_dir: Path) -> None:
    """The agent runs a batch in slices (yielding to the event loop): same events, same
    dirty brands and the same states as one ``process`` call."""
    items = scenario.posts()
    _, _, match, whole, _ = make(rules_dir)
    matches = matches_records(match, items)
    _, _, _, sliced, _ = make(rules_dir)
    pauses = 0
    for start in range(0, len(matches), 200):
        batch = matches[start : start + 200]
        expected = whole.process(batch)
        got = DetectOutput()
        events = []
        for _ in sliced.steps(batch, got, lambda: True):
            pauses += 1
            events.extend(got.events)  # the agent sends these at each pause
            got.events.clear()
        events.extend(got.events)
        assert [e.to_cloudevent() for e in events] == [e.to_cloudevent() for e in expected.events]
        assert got.dirty == expected.dirty
    assert pauses > len(matches)  # a pause after every record and every advanced brand
    assert sliced.states.keys() == whole.states.keys()
    for brand in whole.states:
        assert sliced.dump(brand) == whole.dump(brand)


def test_state_survives_a_restart_through_the_table(rules_dir: Path) -> None:
    _, _, _, detect, table = make(rules_dir)
    hit_item = scenario.posts()[0]
    post = post_from_dict(hit_item)
    from rules.matcher import Matcher
    from rules.model import Hit

    m = Matcher(load_rules(rules_dir)).match(post)
    assert m, "the first scenario post mentions a brand"
    hit = Hit.from_post(post, m[0])
    out = detect.process([Record("p.matches", 0, 0, None, encode_hit(hit))])
    table[hit.brand] = detect.dump(hit.brand)
    # a new stage (a restarted worker) reads the same state back from the table
    _, _, _, again, _ = make(rules_dir)
    again.load = table.get
    assert again.state(hit.brand) is not None
    assert again.dump(hit.brand) == table[hit.brand]
    assert out.dirty == {hit.brand: 0}


def test_rows_count_as_the_hits_they_came_from(rules_dir: Path) -> None:
    """A batch's hits as rows leave the same brand states (samples included) as the
    same hits sent as objects; a batch of dicts (an older worker's) still reads."""
    items = scenario.posts()
    _, _, match, _, _ = make(rules_dir)
    hits = match.process(
        [Record("p.posts", 0, i, None, orjson.dumps(p)) for i, p in enumerate(items)]
    ).hits
    assert len(hits) > 10
    rows = encode_batch(hits, None)
    objects = orjson.dumps({"t": "b", "hits": [h.to_dict() for h in hits], "tick": None})
    assert decode_items(rows) == [h.to_row() for h in hits]
    assert decode_items(objects) == hits
    assert decode_record(encode_batch(hits[:1], None)) == hits[0]
    states = []
    for value in (rows, objects):
        _, _, _, detect, _ = make(rules_dir)
        out = detect.process([Record("p.matches", 0, 0, None, value)])
        assert out.bad_records == []
        states.append({b: detect.dump(b) for b in sorted(detect.states)})
    assert states[0] == states[1] and len(states[0]) >= 2


@pytest.mark.parametrize(
    "bad",
    [
        ["acme", "x:1", "s", "1790000000000", "a", None, 1, [], "t", None, "c", None],
        ["acme", "x:1", "s", 1790000000000, "a", None, 1, [["r"]], "t", None, "c", None],
        ["acme", "x:1", "s", 1790000000000, "a", None, True, [], "t", None, "c", None],
        ["acme", "x:1", "s", 1790000000000, "a", None, 1, [], "t", None, "c"],
    ],
    ids=["time-as-text", "nested-rule-id", "followers-as-bool", "short"],
)
def test_a_malformed_row_makes_the_record_bad_not_the_worker_crash(
    rules_dir: Path, bad: list
) -> None:
    value = orjson.dumps({"t": "b", "hits": [bad], "tick": None})
    with pytest.raises(ValueError, match="not a hit row"):
        decode_items(value)
    metrics, _, _, detect, _ = make(rules_dir)
    out = detect.process([Record("p.matches", 2, 5, b"k", value)])
    assert [(r.partition, r.offset) for r in out.bad_records] == [(2, 5)]
    assert detect.states == {}
    # dead-lettered and counted, like a bad post
    [(key, dead)] = out.dead_letters
    assert key == b"k"
    assert (dead["reason"], dead["stage"], dead["topic"]) == (
        "bad_matches_record",
        "detector",
        "p.matches",
    )
    assert (dead["partition"], dead["offset"]) == (2, 5)
    assert "not a hit row" in dead["detail"]
    assert base64.b64decode(dead["payload_b64"]) == value
    assert (
        metrics.registry.get_sample_value(
            "crisiswatch_dead_letters_total", {"stage": "detector", "reason": "bad_matches_record"}
        )
        == 1
    )


def test_tick_round_trip_and_partitioning() -> None:
    tick = Tick("w1", {0: PartitionReport(5, True, 9), 3: PartitionReport(None, False, 9)})
    assert decode_record(encode_tick(tick)) == tick
    # Kafka's default partitioner (murmur2), as the Java client: known values
    assert [partition_for(k, 4) for k in ("acme", "zhongyuan")] == [
        partition_for("acme", 4),
        partition_for("zhongyuan", 4),
    ]
    assert all(0 <= partition_for(f"brand{i}", 7) < 7 for i in range(100))


def test_a_batch_matched_in_slices_gives_what_one_call_gives(rules_dir: Path) -> None:
    """The match loop matches a big batch in slices and joins the outputs (``extend``)."""
    items = scenario.posts()
    records = [Record("p.posts", i % PARTS, i, None, orjson.dumps(p)) for i, p in enumerate(items)]
    records[7] = Record("p.posts", 3, 7, b"k", b"{not json")
    _, _, whole_stage, _, _ = make(rules_dir)
    whole = whole_stage.process(records)
    _, _, sliced_stage, _, _ = make(rules_dir)
    joined = sliced_stage.process(records[:50])
    for start in range(50, len(records), 50):
        joined.extend(sliced_stage.process(records[start : start + 50]))
    assert joined.hits == whole.hits and len(whole.hits) > 10
    assert joined.event_times == whole.event_times
    assert [d["reason"] for _, d in joined.dead_letters] == ["invalid_json"]
    assert [d["offset"] for _, d in joined.dead_letters] == [
        d["offset"] for _, d in whole.dead_letters
    ]


def test_incremental_write_backs_restart_to_the_same_states(rules_dir: Path) -> None:
    """What ``DetectStage.write`` stores, applied in order to a table after each record
    (as the agent's write-back does), restarts a stage with the states it had: heads
    under the brand, segments under ``<brand>/<name>`` (merged ones too), and the
    expired and merged-away segments deleted."""
    first = scenario.posts()[0]
    start_ms = 1_790_000_000_000
    items = [  # a post mentioning acme every 2 s for 30 minutes
        {**first, "id": f"dense-{i}", "text": "acme burgers are fine",
         "created_at": format_rfc3339_ms(start_ms + 2_000 * i)}
        for i in range(900)
    ]  # fmt: skip
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(rules_dir, metrics, lateness_ms=60_000, step_ms=10_000)
    match = MatchStage(holder, metrics, idle_after_ms=1_000, now_ms=lambda: 1_000)
    table: dict[str, bytes] = {}
    detect = DetectStage(
        holder, metrics, partitions=PARTS, load=table.get, now_ms=lambda: 1_000, segment_fanout=2
    )
    merged, deleted = set(), 0
    for record in matches_records(match, items):
        for brand in detect.process([record]).dirty:
            for key, value in detect.write(brand):
                if value is None:
                    deleted += table.pop(key, None) is not None
                else:
                    table[key] = value
                    merged |= {key} if "." in key else set()
            detect.written(brand)
    assert merged and deleted
    assert set(table) == {"acme"} | {f"acme/{n}" for n in _names(detect.states["acme"])}
    again = DetectStage(holder, metrics, partitions=PARTS, load=table.get, now_ms=lambda: 1_000)
    again.state("acme")  # read from the table: the head, then the segments it lists
    assert again.dump("acme") == detect.dump("acme")


def _names(st: BrandState) -> set[str]:
    got = {segment_name(i, lv) for i, lv in zip(st.segments, st.levels, strict=True)}
    return got | ({history_name(st.history[0])} if st.history is not None else set())


def test_tidying_at_the_write_back_leaves_what_tidying_at_once_leaves(rules_dir: Path) -> None:
    """The sweep leaves forgetting expired buckets and post ids to the brand's next
    write (``DetectStage.tidy``), so the alerts go out first.  Tidied after every
    record or only at the end (many sweeps and hits later): the same events, and
    the same states once tidied."""
    items = scenario.posts()
    _, _, match, at_once, _ = make(rules_dir)
    records = matches_records(match, items, batched=True)
    _, _, _, deferred, _ = make(rules_dir)
    events_at_once, events_deferred = [], []
    for record in records:
        events_at_once.extend(at_once.process([record]).events)
        for brand in list(at_once.states):
            at_once.tidy(brand)
        events_deferred.extend(deferred.process([record]).events)
    assert [e.to_cloudevent() for e in events_deferred] == [
        e.to_cloudevent() for e in events_at_once
    ]
    assert events_at_once  # the scenario opens incidents
    # before its tidy the deferred stage still holds buckets no window reads any more;
    # the ids behind the boundary each sweep forgot itself
    acme, acme_tidied = deferred.states["acme"], at_once.states["acme"]
    assert acme.dedup == acme_tidied.dedup
    assert sum(len(s.keys) for s in acme.series.values()) > sum(
        len(s.keys) for s in acme_tidied.series.values()
    )
    assert deferred.states.keys() == at_once.states.keys()
    for brand in at_once.states:
        assert deferred.dump(brand) == at_once.dump(brand)  # dump tidies first


def test_a_sweep_goes_ahead_of_the_hits_it_cannot_read(rules_dir: Path) -> None:
    """Batch records one at a time through ``steps``, as the agent runs them: a record
    whose tick reaches a new boundary is swept before its hits created at or after that
    boundary are counted (they are held, and counted at the partition's next record
    that reaches no new boundary).  The events are still the engine's, and once the held hits are
    counted (``count_held``, before a write-back) the states are those of a stage that
    counted every record's hits at once (``process``)."""
    items = scenario.posts()
    expected = engine_events(rules_dir, items)

    _, _, match, agent_like, _ = make(rules_dir)
    records = matches_records(match, items, batched=True)
    _, _, _, at_once, _ = make(rules_dir)
    got, holds, held_before_sweep = [], 0, 0
    for index, record in enumerate(records):
        out = DetectOutput()
        for _ in agent_like.steps([record], out, lambda: False):
            pass
        got.extend(out.events)
        if agent_like._held:
            holds += 1
            for hits in agent_like._held.values():
                for row in hits:  # held: not yet counted
                    held_before_sweep += str(row[0]) not in agent_like.states or (
                        str(row[1]) not in agent_like.states[str(row[0])].dedup
                    )
        at_once.process([record])
        assert not at_once._held  # process() returns with every hit counted
        if index == len(records) // 2:  # a write-back midway: everything held is counted
            changed = agent_like.count_held()
            assert not agent_like._held
            assert all(partition_for(brand, PARTS) == q for q, brand in changed)
    assert holds > 5 and held_before_sweep > 0
    assert {e.id: e.to_cloudevent() for e in got} == {e.id: e.to_cloudevent() for e in expected}
    assert len(got) == len(expected)
    agent_like.count_held()
    assert agent_like.states.keys() == at_once.states.keys()
    for brand in at_once.states:
        assert agent_like.dump(brand) == at_once.dump(brand)


def test_a_sweep_leaves_its_bookkeeping_to_the_partitions_next_record(rules_dir: Path) -> None:
    """A record whose tick reaches a new boundary sweeps the partition's due brands and
    leaves the rest of their bookkeeping (``Detector.finish``) and their next due times
    to the partition's next record, which does it before anything else: the alerts of
    all four partitions' sweeps go out first.  Run so, record by record, the events are
    the engine's, and the states those of a stage that ran every record at once."""
    items = scenario.posts()
    expected = engine_events(rules_dir, items)
    _, _, match, agent_like, _ = make(rules_dir)
    records = matches_records(match, items, batched=True)
    _, _, _, at_once, _ = make(rules_dir)
    got, left, finished = [], 0, 0
    for record in records:
        q = record.partition
        waiting = list(agent_like._unfinished.get(q, ()))
        out = DetectOutput()
        for _ in agent_like.steps([record], out, lambda: False):
            pass
        got.extend(out.events)
        for brand in waiting:  # finished first: then swept again, or not advanced at all
            st = agent_like.states[brand]
            assert st.unfinished is None or brand in agent_like._unfinished.get(q, ())
            finished += 1
        for brand in agent_like._unfinished.get(q, ()):
            assert partition_for(brand, PARTS) == q
            left += agent_like.states[brand].unfinished is not None
        at_once.process([record])
    assert left > 5 and finished > 5
    assert {e.id: e.to_cloudevent() for e in got} == {e.id: e.to_cloudevent() for e in expected}
    assert len(got) == len(expected)
    agent_like.count_held()
    for brand in at_once.states:
        assert agent_like.dump(brand) == at_once.dump(brand)  # dump finishes and tidies first


def _acme_brands(tmp_path: Path, more: str = "") -> Path:
    """A brands directory: acme, with one keyword rule (recall, min_count 1, window 1m,
    and ``more``)."""
    brands = tmp_path / "brands"
    brands.mkdir()
    (brands / "acme.yaml").write_text(
        "brand: acme\nmentions:\n  query: acme\nrules:\n"
        "  - {id: recall, kind: keyword, query: recall, min_count: 1, window: 1m,"
        f"{more} crisis_type: product_quality, severity: high}}\n"
    )
    return brands


def test_a_partition_of_ticks_alone_still_sweeps_each_brand_on_time(tmp_path: Path) -> None:
    """An idle partition sends ticks and nothing else, so every record is a sweep and
    the bookkeeping a sweep leaves is finished by the next one, before it sweeps: an
    incident opens and resolves at the record whose watermark first reaches the
    boundary the detector decides it at."""
    _, holder, _, detect, _ = make(_acme_brands(tmp_path, " resolve_after: 30s,"))
    q = partition_for("acme", PARTS)
    t0 = 1_795_766_400_000
    at = t0 + 105_000
    the_hit = Hit("acme", "p:1", "mastodon", at, "mastodon:1", "u1", 1, ("recall",),
                  "acme recall", None, format_rfc3339_ms(at))  # fmt: skip
    # what the detector decides for this hit, evaluating every boundary in one advance
    alone = holder.current.detector
    st = alone.new_state("acme")
    alone.observe(st, the_hit)
    decided = [(e.type, e.time_ms) for e in alone.advance(st, t0 + 600_000)]
    assert [t.rsplit(".", 1)[-1] for t, _ in decided] == ["opened", "resolved"]

    def record(offset: int, hits: list[Hit], newest_ms: int) -> Record:
        tick = Tick("s1", {p: PartitionReport(newest_ms, False, 0) for p in range(PARTS)})
        return Record("p.matches", q, offset, None, encode_batch(hits, tick))

    seen: list[tuple[str, int, int]] = []
    for n in range(60):  # one tick every 10 s of event time: watermark 100 s, 110 s, ...
        newest = t0 + 160_000 + n * 10_000
        out = DetectOutput()
        rec = record(n, [the_hit] if n == 0 else [], newest)
        for _ in detect.steps([rec], out, lambda: False):
            pass
        seen.extend((e.type, e.time_ms, newest - 60_000) for e in out.events)
    assert [(t, ms) for t, ms, _ in seen] == decided
    assert all(wm == ms for _, ms, wm in seen)  # at the first tick that reaches it


def test_held_hits_wait_until_a_sweep_reads_them(tmp_path: Path) -> None:
    """A record reaching a new boundary counts, before its sweep, only the hits that
    boundary's windows read (held ones included); the others stay held through it, so
    its alerts wait for no other counting.  A record reaching no boundary counts all
    but those created at or after the next boundary, which stay held until a record
    whose next boundary is past them."""
    _, _, _, detect, _ = make(_acme_brands(tmp_path))  # lateness 60 s, step 10 s
    q = partition_for("acme", PARTS)
    t0 = 1_795_766_400_000

    def hit(n: int, at_s: int) -> Hit:
        at = t0 + at_s * 1000
        return Hit(
            "acme",
            f"p:{n}",
            "mastodon",
            at,
            "mastodon:1",
            "u1",
            1,
            ("recall",),
            "acme recall",
            None,
            format_rfc3339_ms(at),
        )

    def record(offset: int, hits: list[Hit], newest_s: int) -> Record:
        report = PartitionReport(t0 + newest_s * 1000, False, 0)
        tick = Tick("s1", {p: report for p in range(PARTS)})
        return Record("p.matches", q, offset, None, encode_batch(hits, tick))

    def counted() -> set[str]:
        # the ids in the brand's buckets (a sweep forgets the dedup ids behind it)
        st = detect.states.get("acme")
        if st is None:
            return set()
        return {
            str(sample[1]) for rec in st.series["mentions"].records.values() for sample in rec[3:]
        }

    def held() -> set[str]:
        return {str(row[1]) for row in detect._held.get(q, [])}

    assert detect.swept_boundary_ms() is None  # no partition read yet
    # watermark -> 105 s, boundary 100 s: both hits are after it, held
    out = DetectOutput()
    for _ in detect.steps([record(0, [hit(1, 105), hit(2, 116)], 165)], out, lambda: False):
        pass
    assert (held(), counted(), out.events) == ({"p:1", "p:2"}, set(), [])
    assert detect.swept_boundary_ms() == t0 + 100_000  # what the match loop holds for
    # boundary 110 s: p:1 is counted before the sweep (which opens the incident on it),
    # p:2 and the record's own p:3 stay held
    out = DetectOutput()
    for _ in detect.steps([record(1, [hit(3, 112)], 172)], out, lambda: False):
        pass
    assert [(e.type.rsplit(".", 1)[-1], e.data["window"]["count"]) for e in out.events] == [
        ("opened", 1)
    ]
    assert (held(), counted()) == ({"p:2", "p:3"}, {"p:1"})
    # watermark 115 s, still boundary 110 s: everything held is counted now
    out = DetectOutput()
    for _ in detect.steps([record(2, [], 175)], out, lambda: False):
        pass
    assert (held(), counted(), out.events) == (set(), {"p:1", "p:2", "p:3"}, [])
    assert detect.swept_boundary_ms() == t0 + 110_000
    # watermark 118 s: p:4 (121 s) is after the next boundary (120 s), no sweep before
    # it reads p:4: held; p:5 (118 s) is counted
    out = DetectOutput()
    for _ in detect.steps([record(3, [hit(4, 121), hit(5, 118)], 178)], out, lambda: False):
        pass
    assert (held(), counted()) == ({"p:4"}, {"p:1", "p:2", "p:3", "p:5"})
    # the same record again, the watermark unchanged: still held, nothing counted twice
    for _ in detect.steps([record(3, [hit(4, 121)], 178)], out, lambda: False):
        pass
    assert (held(), counted()) == ({"p:4"}, {"p:1", "p:2", "p:3", "p:5"})
    # boundary 120 s: its sweep cannot read p:4 either; at 125 s it is counted
    for _ in detect.steps([record(4, [], 181)], out, lambda: False):
        pass
    assert held() == {"p:4"}
    assert detect.swept_boundary_ms() == t0 + 120_000
    for _ in detect.steps([record(5, [], 185)], out, lambda: False):
        pass
    assert (held(), counted()) == (set(), {"p:1", "p:2", "p:3", "p:4", "p:5"})
    assert out.events == []  # p:1's incident stays open: the 1 m window still holds it
    # a second partition read, behind: the lowest counts; after a rebalance, none
    other = (q + 1) % PARTS
    behind = Tick("s1", {p: PartitionReport(t0 + 150_000, False, 0) for p in range(PARTS)})
    out = DetectOutput()
    rec = Record("p.matches", other, 0, None, encode_batch([], behind))
    for _ in detect.steps([rec], out, lambda: False):
        pass
    assert detect.swept_boundary_ms() == t0 + 90_000
    detect.forget()
    assert detect.swept_boundary_ms() is None


_GAUGES = {"crisiswatch_open_incidents", "crisiswatch_window_posts", "crisiswatch_baseline_level"}


def _gauge_samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name in _GAUGES
    }


def test_gauges_of_written_brands_are_set_at_the_next_refresh(rules_dir: Path) -> None:
    """The worker sets the per-brand gauges at a scrape (``refresh_gauges``), not at
    each write-back: the brands written since the last refresh and the ones it names,
    with what ``update_gauges`` gives, each once."""
    ref_metrics, _, match, ref, _ = make(rules_dir)
    records = matches_records(match, scenario.posts())
    # the records up to the first that opens an incident, processed one by one
    n = 1 + next(
        i
        for i, record in enumerate(records)
        if any(e.type.endswith("opened") for e in ref.process([record]).events)
    )
    expected = _gauge_samples(ref_metrics)  # process sets every changed brand's gauges
    assert any(v > 0 for (name, _), v in expected.items() if name.endswith("window_posts"))
    assert any(v > 0 for (name, _), v in expected.items() if name.endswith("open_incidents"))

    metrics, _, _, lazy, _ = make(rules_dir)
    out = DetectOutput()
    for record in records[:n]:
        for _ in lazy.steps([record], out, lambda: False):
            pass
    lazy.count_held()
    brands = sorted(lazy.states)
    assert len(brands) >= 2
    held_back = brands[0]  # changed, not written back yet
    for brand in brands[1:]:
        lazy.write(brand)
        lazy.written(brand)
    assert _gauge_samples(metrics) == {}  # nothing set before a refresh
    refreshed = list(lazy.refresh_gauges([held_back], lambda: True))
    assert len(refreshed) == len(brands)  # a pause after each brand, each brand once
    assert _gauge_samples(metrics) == expected
    assert list(lazy.refresh_gauges([], lambda: True)) == []  # none due until written again


def test_a_rebalance_drops_the_per_brand_gauges(rules_dir: Path) -> None:
    """After a rebalance the brands' owners report them: a series kept by a worker that
    lost the brand would go on reporting its last value (an incident open long after its
    new owner resolved it, under the dashboards' ``max by``)."""
    metrics, _, match, detect, table = make(rules_dir)
    records = matches_records(match, scenario.posts())
    half = len(records) // 2
    for brand in detect.process(records[:half]).dirty:
        table[brand] = detect.dump(brand)
    assert _gauge_samples(metrics)
    detect.forget()
    assert _gauge_samples(metrics) == {}
    detect.process(records[half:])  # still the owner: set again as the brands change
    assert _gauge_samples(metrics)


def test_partition_for_is_kafkas_partitioner_however_often_asked() -> None:
    """The cached partitioner gives murmur2's partition (the Java client's, pinned by
    known values) on the first call and on every repeat, for more keys than it caches."""
    from aiokafka.partitioner import murmur2

    # the Java client's DefaultPartitioner: toPositive(murmur2(key)) % n
    assert [partition_for(k, 4) for k in ("acme", "globex", "brand0001")] == [
        (murmur2(k.encode()) & 0x7FFFFFFF) % 4 for k in ("acme", "globex", "brand0001")
    ]
    keys = [f"k{i}" for i in range(40_000)]  # more than the cache holds
    want = [(murmur2(k.encode()) & 0x7FFFFFFF) % 7 for k in keys]
    for _ in range(2):
        assert [partition_for(k, 7) for k in keys] == want
    assert [partition_for(k, 3) for k in keys[:100]] == [
        (murmur2(k.encode()) & 0x7FFFFFFF) % 3 for k in keys[:100]
    ]
    info = partition_for.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize


def test_commit_event_times_keeps_each_partitions_newest(rules_dir: Path) -> None:
    """Committing a slice's event times at once leaves the clock as observing every
    post in turn would: per partition the newest event time, and all of them active."""
    import random

    from rules.watermark import PartitionClock

    _, _, match, _, _ = make(rules_dir)
    rng = random.Random(3)
    times = [(rng.choice([0, 0, 0, 1, 2]), rng.randrange(10_000)) for _ in range(500)]
    times += [(3, 5)]
    match.clock.assign({0, 1, 2, 3}, now_ms=0)
    match.commit_event_times(times)
    each = PartitionClock(1_000)
    each.assign({0, 1, 2, 3}, now_ms=0)
    for p, ts in times:
        each.observe(p, ts, 1_000)
    assert match.clock.report(1_500) == each.report(1_500)
    newest = {p: max(ts for q, ts in times if q == p) for p in range(4)}
    assert {p: r.max_event_ms for p, r in match.clock.report(1_500).items()} == newest
    # an older time later leaves a partition's newest as it was
    match.commit_event_times([(1, 0), (1, 1)])
    assert match.clock.report(1_500)[1].max_event_ms == newest[1]


def test_the_schedule_keeps_its_superseded_entries_bounded(rules_dir: Path) -> None:
    """A brand scheduled far ahead and then earlier, over and over, leaves its superseded
    entries in the partition's heap; past a few per brand the heap keeps only live ones,
    and the brand is still due at its earliest time."""
    _, _, _, detect, _ = make(rules_dir)
    partition = next(p for p in range(PARTS) if detect.brands_of(p))
    brand = detect.brands_of(partition)[0]
    for i in range(1_000):
        detect._schedule(partition, brand, 10**9 - i)  # each one earlier: every push stays
    heap = detect._heaps[partition]
    assert len(heap) <= 4 * (len(detect._due) + 16) + 1
    assert min(heap) == (10**9 - 999, brand)
    assert [e for e in heap if e[1] == brand and e[0] == 10**9 - 999] == [min(heap)]
