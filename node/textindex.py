"""Keyword search terms for the catalogue, Chinese included, on SQLite and PostgreSQL alike.

An archive's title, its metadata values and the text extracted from its content (FHIR narrative,
HL7 text observations, DICOM descriptions, plain text) are cut into terms stored in
``search_terms`` (term, archive id) — an inverted index that both databases serve from one B-tree:

- runs of CJK characters (汉字, kana, hangul) give every character (unigram) and every pair of
  neighbouring characters (bigram): 出院小结 → 出 院 小 结 出院 院小 小结. No dictionary is needed,
  so new medical terms and names are found as well as words (jieba would miss a segmentation);
- runs of letters and digits give lower-cased words (NFKC-normalised, so full-width ＣＴ is ct).

A query is cut the same way, with CJK runs of two or more characters as bigrams only; an archive
matches when it holds every query term. The terms hold fragments of PHI (names in titles): they
live only in the node's database, are never logged, and must be erased with the archive's
content when it is destroyed.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Iterable

MAX_TERM_LENGTH = 64
MAX_TERMS_PER_ARCHIVE = 4000
MAX_TEXT_CHARS = 200_000
MAX_QUERY_TERMS = 16

_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # hangul syllables
    "\uf900-\ufaff"  # compatibility ideographs
)
_TOKENS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")


def _runs(text: str) -> Iterable[str]:
    normalised = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS]).lower()
    return _TOKENS.findall(normalised)


def _distinct_runs(text: str) -> Iterable[str]:
    """The distinct runs of ``_runs(text)``, in order of first appearance.

    Whitespace ends every run, so the text is split on it first and the tokenizer runs once per
    distinct word: documents repeat their words, and the regular expression costs about 60 ns a
    character (151 us of the 187 us a 4 KB benchmark document took to cut in all; 67 us this
    way). Lower-casing a word alone gives what lower-casing the whole
    text gives: the only context-dependent rule (Greek final sigma) looks no further than the
    word. ``tests/node/test_textindex.py`` checks the result against ``_runs`` directly."""
    normalised = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS])
    runs: dict[str, None] = {}
    for word in dict.fromkeys(normalised.split()):
        runs.update(dict.fromkeys(_TOKENS.findall(word.lower())))
    return runs


def index_terms(*texts: str) -> set[str]:
    """The distinct terms of ``texts`` for the index (at most ``MAX_TERMS_PER_ARCHIVE``)."""
    terms: set[str] = set()
    for text in texts:
        for run in _distinct_runs(text):
            if _IS_CJK.match(run):
                terms.update(run)
                terms.update(map(operator.add, run, run[1:]))
            elif len(run) <= MAX_TERM_LENGTH:
                terms.add(run)
            if len(terms) >= MAX_TERMS_PER_ARCHIVE:
                return set(sorted(terms)[:MAX_TERMS_PER_ARCHIVE])
    return terms


def query_terms(query: str) -> list[str]:
    """The terms an archive must all hold to match ``query`` (empty: nothing to search)."""
    terms: list[str] = []
    for run in _runs(query):
        if _IS_CJK.match(run):
            grams = [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
        else:
            grams = [run[:MAX_TERM_LENGTH]]
        for gram in grams:
            if gram not in terms:
                terms.append(gram)
    return terms[:MAX_QUERY_TERMS]
