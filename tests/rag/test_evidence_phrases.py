"""``phrases``: does the knowledge base use the question's two-word phrases side by side?

A question about a feature the product lacks often names it with words the articles use,
but never together ("a free trial" next to "two months free" and "trial" nowhere)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from genesis.rag import AbstentionPolicy, Evidence, EvidenceScorer, vocabulary
from genesis.rag._evidence import word_pairs

KB = [
    "Paying annually gives you two months free. Sales tax is added to each invoice.",
    "Support answers within 1 business day on the Growth plan.",
]


def _zeros(texts: object) -> npt.NDArray[np.float32]:
    return np.zeros((len(list(texts)), 4), dtype=np.float32)  # type: ignore[arg-type]


def _scorer() -> EvidenceScorer:
    scorer = EvidenceScorer(_zeros, lambda text: np.zeros(4, dtype=np.float32))
    scorer.set_vocabulary(vocabulary(KB))
    return scorer


def _phrases(question: str) -> float:
    return _scorer().assess(question, None, [0.5], KB).evidence.phrases


def test_word_pairs_are_adjacent_content_words_as_terms() -> None:
    assert word_pairs("Can I add a late fee to overdue invoices?") == [
        ("lat", "fee"),
        ("overdu", "invoic"),
    ]
    assert word_pairs("How do I do it?") == []


def test_a_phrase_the_knowledge_base_never_uses_scores_lower_than_one_it_uses() -> None:
    assert _phrases("Is sales tax on each invoice?") == 1.0
    assert _phrases("Do you charge state sales tax?") < 1.0  # "state sales" is nowhere
    assert _phrases("How long is the free trial?") == 0.0  # "free" and "trial" never meet


def test_a_question_without_phrases_or_a_scorer_without_vocabulary_tells_nothing() -> None:
    assert _phrases("What does support do?") == 1.0  # no two content words side by side
    bare = EvidenceScorer(_zeros, lambda text: np.zeros(4, dtype=np.float32))
    assert bare.assess("How long is the free trial?", None, [0.5], KB).evidence.phrases == 1.0


def test_the_policy_weighs_phrases() -> None:
    policy = AbstentionPolicy(
        dense=0,
        lexical=0,
        sentence=0,
        coverage=0,
        known=0,
        names=0,
        best=0,
        phrases=1,
        threshold=0.5,
    )
    assert policy.abstains(Evidence(1, 1, 1, 1, phrases=0.0))
    assert not policy.abstains(Evidence(1, 1, 1, 1, phrases=1.0))
    assert "phrases" in Evidence(1, 1, 1, 1).as_dict()
