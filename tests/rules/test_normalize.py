"""Normalisation and the NEAR tokeniser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.normalize import collapse_spaces, is_cjk_char, is_word_char, normalize, tokenize


def test_full_width_and_case_fold() -> None:
    assert normalize("ＡＣＭＥ") == "acme"
    assert normalize("ACME Foods") == "acme foods"
    assert normalize("Straße") == "strasse"


def test_traditional_folds_to_simplified_keeping_length() -> None:
    assert normalize("質量問題") == "质量问题"
    assert normalize("艾克美食品召回") == "艾克美食品召回"
    trad = "中原航空航班延誤，乘客滯留機場"
    assert normalize(trad) == "中原航空航班延误,乘客滞留机场"
    assert len(normalize(trad)) == len(trad)


def test_ideographic_space_and_full_width_punctuation() -> None:
    assert normalize("艾克美\u3000召回！") == "艾克美 召回!"


def test_word_and_cjk_classes() -> None:
    assert is_word_char("a") and is_word_char("é") and is_word_char("7")
    assert not is_word_char("手") and not is_word_char("#") and not is_word_char(" ")
    assert is_cjk_char("手") and not is_cjk_char("a") and not is_cjk_char("，")


def test_tokenize_latin_hashtags_mentions_and_cjk() -> None:
    assert tokenize("召回 #acme burger! @kim@host apple手机") == [
        "召",
        "回",
        "#acme",
        "burger",
        "@kim",
        "@host",
        "apple",
        "手",
        "机",
    ]
    assert tokenize("a # b") == ["a", "b"]
    assert tokenize("!!! ...") == []


def test_collapse_spaces() -> None:
    assert collapse_spaces("  food \n\t poisoning  ") == "food poisoning"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("質量問題延誤機場艾克美召回食物中毒acmeACME ")))
def test_normalize_idempotent_on_mixed_script(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)
