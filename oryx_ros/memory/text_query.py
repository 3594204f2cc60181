"""User text → search terms, the same for both backends, never interpreted as query syntax.

A question such as "where did you see the red mug?" becomes the terms ``see red mug``: words are runs of
letters and digits (Unicode), lower-cased, de-duplicated, with common English function words dropped (they
match nearly every description, which costs time at 10^6 entries and says nothing about relevance). The
terms are OR-ed, so an entry matching more of them ranks higher instead of a single missing word hiding it.

SQLite gets each term as an FTS5 string literal (``"term"``, quotes doubled), PostgreSQL as the argument of
``plainto_tsquery('simple', %s)``: neither can see an operator, a column filter or a parenthesis.
"""

from __future__ import annotations

import re
from typing import Final

# Longest term kept: longer "words" are noise (hashes, base64) and PostgreSQL ignores words over 2047 bytes.
MAX_TERM_CHARS: Final = 64
# Most terms per query: bounds the query's cost whatever the user pastes.
MAX_TERMS: Final = 32
_WORD: Final = re.compile(r"[^\W_]+")
# Function words that tell nothing about what was seen (and the verbs of asking about it).
STOP_WORDS: Final = frozenset((
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have",
    "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "no", "nor", "not", "of", "off", "on", "once", "only", "or",
    "other", "our", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "would", "you", "your", "see", "saw", "seen",
))


def query_terms(text: str) -> list[str]:
    """The search terms of ``text``: lower-cased words, in order, unique, without stop words (unless the text
    has nothing else), at most MAX_TERMS of at most MAX_TERM_CHARS characters."""
    words = [w for w in dict.fromkeys(_WORD.findall(text.lower())) if len(w) <= MAX_TERM_CHARS]
    content = [w for w in words if w not in STOP_WORDS]
    return (content or words)[:MAX_TERMS]


def fts5_match_expression(terms: list[str]) -> str:
    """An FTS5 MATCH expression that ORs ``terms`` as string literals (so "NEAR", "OR", "col:" or ``*`` in
    user text are plain words)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def object_labels_text(labels: list[str]) -> str:
    """The object labels of an entry as one searchable text column."""
    return " ".join(labels)
