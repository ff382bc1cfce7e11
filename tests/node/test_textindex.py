"""The index's word-at-a-time tokenizer against the whole-text one it replaced: the same runs in
the same order of first appearance, for any text (Hypothesis), so the terms an archive gets do not
depend on how the text was cut."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node import textindex
from node.textindex import _distinct_runs, _runs, index_terms

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
