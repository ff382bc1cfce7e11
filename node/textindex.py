"""Keyword search terms for the catalogue, Chinese included, on SQLite and PostgreSQL alike.

An archive's title, its metadata values and the text extracted from its content (FHIR narrative,
HL7 text observations, DICOM descriptions, plain text) are cut into terms stored in
``search_terms`` (term, archive id) — an inverted index that both databases serve from one B-tree:

- runs of CJK characters (汉字, kana, hangul) give every character (unigram) and every pair of
  neighbouring characters (bigram): 出院小结 → 出 院 小 结 出院 院小 小结. No dictionary is needed,
  so new medical terms and names are found as well as words (jieba would miss a segmentation);
- runs of letters and digits give lower-cased words (NFKC-normalised, so full-width ＣＴ is ct).

**One rule for an archive's terms**, however it reached this node: the union of the terms of its
title and metadata values (``archive_texts``) and of each version's text, at most
``MAX_TERMS_PER_ARCHIVE`` in all, kept in a fixed order of preference — title and metadata first,
then the versions in version order, each text's words in order of first appearance
(``ordered_terms``). Creation cuts title, metadata and the first version's text together; an
amendment adds only the new version's terms the archive lacks, as many as remain under the cap
(``more_terms``); a custody transfer's recipient cuts title, metadata and every decrypted
version's text together (``ordered_terms``) — the set the former custodian cut from them. Text a
source system extracted at ingestion (FHIR narrative, DICOM descriptions, HL7 text observations)
counts as part of the first version's text; it does not travel with a transfer, but the former
custodian's terms do (sealed to the recipient, ``node.protocol.SealedTerms``): the recipient adds
those it lacks, in code point order, to the ones it cut, under the same cap (``more_terms``), so
it finds the record by those words too. Near the cap its set can differ from the custodian's.

A query is cut the same way, with CJK runs of two or more characters as bigrams only; an archive
matches when it holds every query term. The terms hold fragments of PHI (names in titles): they
live only in the node's database, leave it only sealed to a custody transfer's recipient, are
never logged, and must be erased with the archive's content when it is destroyed.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from itertools import islice
from typing import Any

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


def ordered_terms(*texts: str) -> list[str]:
    """The distinct terms of ``texts`` in the index's order of preference, at most
    ``MAX_TERMS_PER_ARCHIVE`` (the cap is read when called): ``texts`` in the order given, each
    one's runs in their order of first appearance, a CJK run giving its characters and then its
    bigrams. An archive keeps the first ``MAX_TERMS_PER_ARCHIVE`` of the terms of
    :func:`archive_texts` followed by each version's text, in version order (see
    :func:`more_terms`)."""
    cap = MAX_TERMS_PER_ARCHIVE
    terms: dict[str, None] = {}
    for text in texts:
        for run in _distinct_runs(text):
            if _IS_CJK.match(run):
                terms.update(dict.fromkeys(run))
                terms.update(dict.fromkeys(map(operator.add, run, run[1:])))
            elif len(run) <= MAX_TERM_LENGTH:
                terms[run] = None
            if len(terms) >= cap:
                return list(terms)[:cap]
    return list(terms)


def index_terms(*texts: str) -> set[str]:
    """The terms of ``texts`` for the index: the set of :func:`ordered_terms` (at most
    ``MAX_TERMS_PER_ARCHIVE``, the first in its order of preference)."""
    return set(ordered_terms(*texts))


def is_term(text: str) -> bool:
    """Whether ``text`` is one term as this module cuts them (what a peer's terms must be)."""
    return 0 < len(text) <= MAX_TERM_LENGTH and text in ordered_terms(text)


def archive_texts(title: str, metadata: Mapping[str, Any]) -> list[str]:
    """What an archive's terms are cut from before any version's text: its title, then its
    metadata values by key (so the order does not depend on how a database keeps JSON keys)."""
    return [title, *(str(metadata[key]) for key in sorted(metadata))]


def more_terms(candidates: Iterable[str], held: Collection[str]) -> list[str]:
    """The terms of ``candidates`` (in order of preference, e.g. :func:`ordered_terms` of a new
    version's text) that an archive holding ``held`` adds: those it lacks, in order, only as many
    as keep it within ``MAX_TERMS_PER_ARCHIVE`` (none once it holds that many). Adding each
    version this way gives the same set as cutting the archive's texts and every version's text
    together with :func:`ordered_terms` (what a custody transfer's recipient does before it adds
    the former custodian's terms, through this function too)."""
    room = MAX_TERMS_PER_ARCHIVE - len(held)
    if room <= 0:
        return []
    return list(islice((term for term in candidates if term not in held), room))


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
