"""What to look up in memory for a question: the object of "when did you last see X?" and the content words
of any other question.

A recall question ("when did you last see the red toolbox?", "where was the cart?", "have you seen my keys?")
is about the whole memory, not the last seconds: the node then searches for X over everything the memory
holds and looks again at the frames of the best moments. Other questions over a window longer than the RAM
buffer search with their content words, so relevant moments are favoured inside the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ARTICLES = r"(?:the|a|an|my|our|your|any|some)\s+"
# Ordered: the first pattern that matches names the thing searched for.
_RECALL_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"\bwhen\s+(?:did|have|had)\s+(?:you|we|i|the robot)\s+(?:last\s+|first\s+|ever\s+)?"
    r"(?:see|seen|saw|spot|spotted|notice|noticed|observe|observed)\s+(?P<thing>.+)",
    r"\bwhere\s+(?:did|have|had)\s+(?:you|we|i|the robot)\s+(?:last\s+|first\s+)?"
    r"(?:see|seen|saw|spot|spotted|notice|noticed)\s+(?P<thing>.+)",
    r"\b(?:have|did)\s+(?:you|we|the robot)\s+(?:ever\s+)?(?:see|seen|spot|spotted|notice|noticed)\s+(?P<thing>.+)",
    r"\bwhere\s+(?:was|were)\s+(?P<thing>.+)",
    r"\b(?:the\s+)?last\s+time\s+(?:you|we|the robot)\s+(?:saw|spotted|noticed)\s+(?P<thing>.+)",
)]
_STOP_WORDS = frozenset(re.findall(r"\S+", """
a an and any are as at be been being by can could did do does doing for from had has have having he her here
him his how i if in into is it its me my no not of on or our out over please she so some than that the their
them then there these they this those to under up us was we were what when where which while who whom why will
with would you your describe tell show see seen saw look looked camera cameras robot last time ever
happened happen object objects thing things something anything
"""))
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class MemoryLookup:
    """``text``: what to search for; ``recall``: True for a recall question (search the whole memory)."""

    text: str
    recall: bool


def memory_lookup(question: str) -> MemoryLookup:
    """The search text for ``question``: the object of a recall question, else its content words."""
    for pattern in _RECALL_PATTERNS:
        match = pattern.search(question)
        if match:
            thing = re.sub(r"[?.!,;:]+\s*$", "", match.group("thing").strip())
            thing = re.sub(rf"^(?:{_ARTICLES})+", "", thing, flags=re.IGNORECASE).strip()
            words = content_words(thing)
            if words:
                return MemoryLookup(" ".join(words), recall=True)
    return MemoryLookup(" ".join(content_words(question)), recall=False)


def content_words(text: str) -> list[str]:
    """Lower-case words of ``text`` without stop words, in order, each once."""
    words = [w.lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w not in _STOP_WORDS))
