"""Answer metrics (seed §3.4): normalised exact match (accuracy) and token-level F1, as in SQuAD/VQA.

normalize_answer("The Red!") == "red";  normalize_answer("three") == "3"
"""

from __future__ import annotations

import re
import string
from collections import Counter

ARTICLES = re.compile(r"\b(a|an|the)\b")
NUMBER_WORDS = {
    word: str(value) for value, word in enumerate("zero one two three four five six seven eight nine ten".split())
}
SPELLINGS = {"color": "colour", "grey": "gray", "centre": "center", "middle": "center"}  # one form per word
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, number words as digits, one spelling per word."""
    words = ARTICLES.sub(" ", text.lower().translate(PUNCTUATION)).split()
    return " ".join(SPELLINGS.get(word, NUMBER_WORDS.get(word, word)) for word in words)


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def token_f1(prediction: str, answer: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers (0..1)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)
