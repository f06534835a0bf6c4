"""Benchmark: normalise + match posts/s for the one-pass Matcher vs a naive per-term baseline.

Synthetic rules: 1,000 brands x ~30 terms (mixed English + Chinese: names,
hashtags, mentions, phrases, wildcards, CJK words, one NEAR per brand).
Posts: 200 characters, 50% English, 40% Chinese (15% of it Traditional), 10% mixed; about one in ten
mentions a brand.  Everything runs on one core in this process.

    .venv/bin/python bench/bench_match.py            # full run (< 60 s)
    .venv/bin/python bench/bench_match.py --quick    # smoke run (a few seconds)

Prints one markdown table row per measurement plus the machine it ran on.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ahocorasick
import ahocorasick_rs

from rules.match_reference import ReferenceMatcher
from rules.matcher import Matcher
from rules.model import Brand, KeywordRule, Post, RuleSet
from rules.normalize import _t2s_table, prepare_text

_TRAD = _t2s_table()[1]
_CJK = [c for c in map(chr, range(0x4E00, 0x4E00 + 4000)) if c not in _TRAD][:3000]
"""Simplified-script characters; Traditional posts are made by swapping in variants below."""
_S2T = {chr(s): chr(t) for t, s in sorted(_t2s_table()[0].items(), reverse=True)}
_FILLER_TEXT = (
    "the a and i you it is was so this that my today just got really not very good bad "
    "food service order again never ever what why when they we store new time people love "
    "hate think know going day week all out about"
)
_FILLER_EN = tuple(_FILLER_TEXT.split())


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(n))


def _cjk_word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_CJK) for _ in range(n))


def build_ruleset(rng: random.Random, n_brands: int) -> tuple[RuleSet, list[list[str]]]:
    """Synthetic brands; also returns each brand's plain words (to sprinkle into posts)."""
    brands: list[Brand] = []
    words: list[list[str]] = []
    for i in range(n_brands):
        name = _syllables(rng, 3) + str(i)
        zh = _cjk_word(rng, 3)
        mentions = f'{name} OR #{name} OR @{name}official OR {zh} OR "{name} store"'
        exclude = f'"{name} fan fiction"'
        rule_words: list[str] = []
        rules = []
        for r in range(3):
            en = [_syllables(rng, rng.randint(2, 4)) for _ in range(4)]
            cn = [_cjk_word(rng, rng.randint(2, 3)) for _ in range(3)]
            terms = [*en[:3], f"{en[3]}*", *cn]
            query = " OR ".join(terms) + f' OR "{en[0]} {en[1]}"'
            if r == 2:
                query = f"({query}) OR ({en[2]} NEAR/4 {cn[0]})"
            rules.append(
                KeywordRule(f"r{r}", query, "other", "medium"),
            )
            rule_words += en[:3] + cn
        brands.append(Brand(f"b{i:04d}", mentions, tuple(rules), exclude_query=exclude))
        words.append([name, zh, *rule_words])
    return RuleSet(tuple(brands), "bench"), words


def build_posts(rng: random.Random, n: int, words: list[list[str]]) -> list[Post]:
    posts = []
    for i in range(n):
        kind = rng.random()
        parts: list[str] = []
        length = 0
        brand_words = rng.choice(words) if rng.random() < 0.1 else None
        while length < 200:
            if brand_words is not None and rng.random() < 0.08:
                w = rng.choice(brand_words)
            elif kind < 0.5 or (kind >= 0.9 and rng.random() < 0.5):
                w = rng.choice(_FILLER_EN)
            else:
                w = _cjk_word(rng, rng.randint(1, 4))
            parts.append(w)
            length += len(w) + 1
        text = " ".join(parts)[:200]
        if 0.5 <= kind < 0.9 and rng.random() < 0.15:  # some Chinese posts in Traditional script
            text = "".join(_S2T.get(c, c) for c in text)
        if kind < 0.5 and rng.random() < 0.3:
            text = text.capitalize()
        posts.append(Post(f"bench:{i}", "bench", text, 0, "1970-01-01T00:00:00Z"))
    return posts


def posts_per_s(fn: Callable[[Post], object], posts: list[Post], min_s: float) -> float:
    """Posts per CPU second of this process (the machine may be shared: CPU time, not wall)."""
    done = 0
    start = time.process_time()
    while True:
        for p in posts:
            fn(p)
        done += len(posts)
        elapsed = time.process_time() - start
        if elapsed >= min_s:
            return done / elapsed


def automaton_walk(matcher: Matcher, texts: list[str], kind: str) -> float:
    """Texts/s for the bare automaton walk (every overlapping match of every term).

    ``kind``: pyahocorasick over code points (``py-str``) or over UTF-8 bytes carried
    as latin-1 (``py-utf8``); an ahocorasick-rs NFA over UTF-8 bytes (``rs-utf8``);
    or what the Matcher runs (``matcher``: for ASCII text the ASCII terms' automaton,
    else its UTF-8 search: a DFA, or Hyperscan with its match callbacks when the terms
    are many).  Encoding included; CPU time, like ``posts_per_s``.
    """
    terms = sorted({key[0] for key in matcher._term_ids})
    inputs = [(t + " ")[:-1] for t in texts]  # fresh strings: no cached UTF-8 form
    if kind in ("matcher", "rs-utf8"):
        finder = matcher._finder
        assert finder is not None and finder._ascii is not None
        ascii_ac = finder._ascii
        utf8: Callable[[bytes], object] = finder._utf8_matches
        if kind == "rs-utf8":
            nfa = ahocorasick_rs.BytesAhoCorasick([t.encode() for t in terms])
            utf8 = functools.partial(nfa.find_matches_as_indexes, overlapping=True)
        start = time.process_time()
        for s in inputs:
            if kind == "matcher" and s.isascii():
                ascii_ac.find_matches_as_indexes(s, overlapping=True)
            else:
                utf8(s.encode())
        return len(inputs) / (time.process_time() - start)
    as_utf8 = kind == "py-utf8"
    automaton = ahocorasick.Automaton()
    for t in terms:
        key = t.encode().decode("latin-1") if as_utf8 else t
        automaton.add_word(key, len(key))
    automaton.make_automaton()
    if as_utf8:
        inputs = [t.encode().decode("latin-1") for t in inputs]
    start = time.process_time()
    for s in inputs:
        for _ in automaton.iter(s):
            pass
    return len(inputs) / (time.process_time() - start)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()}, {model}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--brands", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    n_posts, n_ref, min_s = (500, 20, 0.3) if args.quick else (5000, 200, 5.0)
    ruleset, words = build_ruleset(rng, args.brands)
    posts = build_posts(rng, n_posts, words)
    t0 = time.perf_counter()
    matcher = Matcher(ruleset)
    build_s = time.perf_counter() - t0
    reference = ReferenceMatcher(ruleset)
    sample = posts[:n_ref]
    mismatches = sum(matcher.match(p) != reference.match(p) for p in sample)
    matched = sum(bool(matcher.match(p)) for p in posts)
    fast = posts_per_s(matcher.match, posts, min_s)
    slow = posts_per_s(reference.match, sample, min_s / 2)
    en_posts = [p for p in posts if p.text.isascii()]
    zh_posts = [p for p in posts if not p.text.isascii()]
    fast_en = posts_per_s(matcher.match, en_posts, min_s / 2)
    fast_zh = posts_per_s(matcher.match, zh_posts, min_s / 2)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(
        f"rules: {args.brands} brands, {matcher.terms_count} distinct terms; "
        f"automaton built in {build_s:.2f} s; posts: {n_posts} x 200 chars, "
        f"{matched} match a brand; reference mismatches on {len(sample)}: {mismatches}"
    )
    print()
    print(
        "| matcher, all posts | naive per-term baseline | speed-up | matcher, English only "
        "| matcher, Chinese/mixed only |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {fast:,.0f} posts/s | {slow:,.0f} posts/s | {fast / slow:,.0f}x "
        f"| {fast_en:,.0f} posts/s | {fast_zh:,.0f} posts/s |"
    )
    by_script = {
        "en": [prepare_text(p.text) for p in posts if p.text.isascii()][:1000],
        "zh": [prepare_text(p.text) for p in posts if not p.text.isascii()][:1000],
    }
    print()
    print(
        "| automaton walk only | pyahocorasick, code points | pyahocorasick, UTF-8 "
        "| ahocorasick-rs NFA, UTF-8 | as the matcher (ASCII automaton / UTF-8 search) |"
    )
    print("|---|---|---|---|---|")
    kinds = ("py-str", "py-utf8", "rs-utf8", "matcher")
    for script, texts in by_script.items():
        rates = [automaton_walk(matcher, texts, kind) for kind in kinds]
        print(f"| {script} posts | " + " | ".join(f"{r:,.0f} /s" for r in rates) + " |")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
