"""Text pools for the scenario generator, verified against the real matcher.

Every text the generator uses is checked once with ``Matcher.match``: ordinary
posts mention the brand and match no keyword rule; crisis posts match a rule of
the intended crisis type; trap posts do not match what they must not match.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.model import Brand, KeywordRule, Post, RuleSet
from rules.query import iter_terms, parse

ORDINARY_EN = (
    "just had lunch with {b}, pretty good",
    "the new {b} ad is funny",
    "anyone tried the {b} loyalty program?",
    "thinking about {b} for the weekend",
    "{b} has a new logo",
    "my kids love {b}",
    "saw a {b} billboard downtown",
    "{b} weekend special looks nice",
)
ORDINARY_ZH = (
    "今天体验了{b}，感觉还不错",
    "{b}的新广告挺有意思",
    "有人办过{b}的会员吗",
    "{b}周末有活动",
    "朋友推荐了{b}",
    "在地铁站看到{b}的广告",
)
NOISE = (
    "nice weather today",
    "traffic is terrible this morning",
    "watching the game tonight",
    "new phone who dis",
    "今天天气不错",
    "周末去爬山",
    "这家咖啡店很好喝",
)
CRISIS_EN = (
    "{b} {w}!! this is serious",
    "cannot believe it: {w}, {b}",
    "{w}... {b} please explain",
)
CRISIS_ZH = ("{b}{w}，太离谱了", "听说{b}{w}了", "{b}出现{w}，大家小心")
VIRAL_EN = ("everyone is talking about {b} right now", "{b} is trending #1", "wow {b} today")
VIRAL_ZH = ("{b}上热搜了", "大家都在聊{b}", "{b}今天好火")
ANGRY_EN = ("why is {b} ignoring me", "{b} answer me!!!", "{b} hello??? anyone there")
ANGRY_ZH = ("{b}为什么不回复我", "{b}快回复", "{b}有人吗")
NO_BRAND_EN = ("{w}!! this is serious", "cannot believe it: {w}")
NO_BRAND_ZH = ("出现{w}，大家小心", "听说{w}了")


def is_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def _probe(text: str) -> Post:
    lang = "zh" if is_cjk(text) else "en"
    return Post(id="probe", source="scenario", text=text, created_at_ms=0, created_at="", lang=lang)


def _words(query: str) -> list[str]:
    """Plain words a query's terms suggest (wildcards completed, hashtags kept)."""
    out = []
    for term in iter_terms(parse(query)):
        word = term.raw.strip('"')
        if word.endswith("*"):
            word = word[:-1] + ("" if is_cjk(word) else "ed")
        if word and ":" not in word and "<" not in word and ">" not in word:
            out.append(word)
    return out


@dataclass(slots=True)
class BrandTexts:
    """Verified texts for one brand, by language (``en`` / ``zh``)."""

    brand: str
    ordinary: dict[str, list[str]]
    crisis: dict[str, dict[str, list[str]]]
    """crisis_type -> lang -> texts that match a rule of that type."""
    angry: dict[str, list[str]]
    homonym: list[str]
    """Texts naming an excluded homonym with crisis words: must not match the brand."""
    no_brand: list[str]
    """Crisis words without any brand: must match no brand at all."""


class TextBuilder:
    """Builds and verifies the text pools of every brand of a RuleSet."""

    def __init__(self, ruleset: RuleSet, matcher: object) -> None:
        self.ruleset = ruleset
        self.matcher = matcher

    def _match(self, text: str) -> dict[str, tuple[str, ...]]:
        return {m.brand: m.rule_ids for m in self.matcher.match(_probe(text))}  # type: ignore[attr-defined]

    def build(self, brand: Brand) -> BrandTexts:
        names = {"en": [], "zh": []}  # type: dict[str, list[str]]
        for word in _words(brand.mentions_query):
            if word.startswith(("#", "@")):
                continue
            got = self._match(f"{word} 1")
            if brand.id in got and not got[brand.id]:
                names["zh" if is_cjk(word) else "en"].append(word)
        if not names["en"] and not names["zh"]:
            msg = f"brand {brand.id}: no mention term of {brand.mentions_query!r} matches alone"
            raise ValueError(msg)
        for lang in ("en", "zh"):
            if not names[lang]:
                names[lang] = names["zh" if lang == "en" else "en"]
        kinds = {"en": (ORDINARY_EN, CRISIS_EN, VIRAL_EN, ANGRY_EN),
                 "zh": (ORDINARY_ZH, CRISIS_ZH, VIRAL_ZH, ANGRY_ZH)}  # fmt: skip
        texts = BrandTexts(brand.id, {}, {}, {}, [], [])
        rule_type = {r.id: r.crisis_type for r in brand.rules}
        types = {r.crisis_type for r in brand.rules}
        words = {r.id: _words(r.query) for r in brand.rules if isinstance(r, KeywordRule)}
        for lang, (ordinary, crisis, viral, angry) in kinds.items():
            plain = [t.format(b=b) for t in ordinary for b in names[lang]]
            texts.ordinary[lang] = [t for t in plain if self._match(t).get(brand.id) == ()]
            texts.angry[lang] = [
                t for t in (a.format(b=b) for a in angry for b in names[lang])
                if self._match(t).get(brand.id) == ()
            ]  # fmt: skip
            for ctype in types:
                pool: list[str] = []
                if ctype == "other":
                    pool = [v.format(b=b) for v in viral for b in names[lang]]
                    pool = [t for t in pool if self._match(t).get(brand.id) == ()]
                else:
                    for rule_id, ws in words.items():
                        if rule_type[rule_id] != ctype:
                            continue
                        for w in ws:
                            if is_cjk(w) != (lang == "zh"):
                                continue
                            for tmpl in crisis:
                                t = tmpl.format(b=names[lang][0], w=w)
                                ids = self._match(t).get(brand.id, ())
                                if any(rule_type.get(i) == ctype for i in ids):
                                    pool.append(t)
                texts.crisis.setdefault(ctype, {})[lang] = pool
        all_words = [w for ws in words.values() for w in ws]
        for w in all_words:
            for tmpl in (*NO_BRAND_EN, *NO_BRAND_ZH):
                if is_cjk(tmpl) != is_cjk(w):
                    continue
                t = tmpl.format(w=w)
                if not self._match(t):
                    texts.no_brand.append(t)
        if brand.exclude_query:
            for e in _words(brand.exclude_query):
                for w in all_words[:12]:
                    for b in names["zh" if is_cjk(e) else "en"][:1]:
                        for t in (f"{e} {w}", f"{b} {e}: {w}"):
                            if brand.id not in self._match(t):
                                texts.homonym.append(t)
        return texts
