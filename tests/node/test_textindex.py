"""The index's word-at-a-time tokenizer against the whole-text one it replaced: the same runs in
the same order of first appearance, for any text (Hypothesis), so the terms an archive gets do not
depend on how the text was cut."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node import textindex
from node.textindex import (
    _distinct_runs,
    _runs,
    archive_texts,
    index_terms,
    is_term,
    more_terms,
    ordered_terms,
)

_ALPHABET = st.sampled_from(
    list("aZ9_ -\t\n\x1c\x85\u3000,.ΣσςİßＣＴ①") + list("出院小结血常规あアㄱ한\uf900\u3400")
)


def _reference_runs(text: str) -> list[str]:
    """Runs of the whole lower-cased text, deduplicated (the tokenizer before the change)."""
    normalised = unicodedata.normalize("NFKC", text[: textindex.MAX_TEXT_CHARS]).lower()
    return list(dict.fromkeys(textindex._TOKENS.findall(normalised)))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=60) | st.text(max_size=60))
@example("ΑΣ ΑΣΑ")  # final sigma depends on its neighbours, never across a space
@example("x_y 出院a小结 ＣＴ\u3000ct")
def test_word_at_a_time_runs_equal_the_whole_text_runs(text: str) -> None:
    assert list(_distinct_runs(text)) == _reference_runs(text)
    assert list(_distinct_runs(text)) == list(dict.fromkeys(_runs(text)))


def test_runs_of_a_repetitive_document_and_the_term_cap() -> None:
    text = "出院小结 Chest-CT chest_pain ΟΔΟΣ " * 200
    assert list(_distinct_runs(text)) == ["出院小结", "chest", "ct", "pain", "οδος"]
    assert "ΟΔΟΣ".lower() == "οδος"  # final sigma, as the whole-text lowering gives it
    terms = index_terms(" ".join(f"w{i}" for i in range(5000)))
    assert len(terms) == textindex.MAX_TERMS_PER_ARCHIVE
    assert terms == {f"w{i}" for i in range(textindex.MAX_TERMS_PER_ARCHIVE)}  # the first ones


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(_ALPHABET, max_size=40) | st.text(max_size=40), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=30),
)
def test_terms_added_version_by_version_equal_the_terms_cut_together(
    texts: list[str], cap: int
) -> None:
    """Creation cuts the first text, each amendment adds ``more_terms`` of its own: the archive
    ends with the set a transfer's recipient cuts from every text together, never over the cap,
    whatever the cap."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textindex, "MAX_TERMS_PER_ARCHIVE", cap)
        held = index_terms(texts[0])
        for text in texts[1:]:
            held |= set(more_terms(ordered_terms(text), held))
            assert len(held) <= cap
        assert held == index_terms(*texts)
        assert held == set(ordered_terms(*texts)[:cap])


def test_the_cap_keeps_terms_in_order_of_preference() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textindex, "MAX_TERMS_PER_ARCHIVE", 5)
        assert ordered_terms("zeta alpha", "出院 beta") == ["zeta", "alpha", "出", "院", "出院"]
        assert more_terms(["alpha", "gamma", "delta"], {"alpha", "zeta", "x"}) == ["gamma", "delta"]
        assert more_terms(["gamma"], {"a", "b", "c", "d", "e", "f"}) == []
    metadata = {"b": "second", "a": 1}
    assert archive_texts("Title", metadata) == ["Title", "1", "second"]


@settings(max_examples=300, deadline=None)
@given(st.text(_ALPHABET, max_size=60) | st.text(max_size=60))
@example("ΑΣ ΑΣΑ")
@example("x_y 出院a小结 ＣＴ\u3000ct")
def test_every_term_cut_from_any_text_is_a_term(text: str) -> None:
    """A custody transfer's recipient keeps the custodian's terms that pass ``is_term``: every
    term the custodian can hold must pass."""
    assert all(is_term(term) for term in ordered_terms(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "INJECTED",  # not lower-cased
        "ＣＴ",  # not NFKC-normalised
        "two words",
        "出院小结",  # a CJK run gives unigrams and bigrams only
        "x" * (textindex.MAX_TERM_LENGTH + 1),
        "a,b",
        " ct",
    ],
)
def test_what_is_not_a_term(text: str) -> None:
    assert not is_term(text)


@pytest.mark.parametrize("text", ["ct", "出", "出院", "x" * textindex.MAX_TERM_LENGTH, "a1"])
def test_what_is_a_term(text: str) -> None:
    assert is_term(text)
