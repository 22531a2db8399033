"""A question is answered from the collection whose evidence is best, not only the routed one.

Support and documentation describe the same product, so a question routed to one agent may be
answered by another collection; the routed collection keeps the answer unless another one's
evidence is clearly better (`genesis.rag.TokenCachedRAG.answer`, ``alternates``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genesis.app import Genesis
from genesis.rag import EvidenceScorer, vocabulary

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The answer is in support/refunds.md ("up to 180 days after it succeeded").
QUESTION = "How many days after a payment can I still refund it?"


async def test_a_better_collection_answers_when_the_routed_one_cannot(demo_home: Path) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        agent = g.agent("business_generation")
        alone = await agent.answer(QUESTION, abstain=False)
        weighed = await agent.answer(QUESTION, alternates=["code_review", "support"])
    assert alone.collection == "business_generation" and "180 days" not in alone.answer
    assert weighed.collection == "support" and not weighed.abstained
    assert "180 days" in weighed.answer
    assert weighed.sources[0].source == "refunds.md"


async def test_the_routed_collection_keeps_a_question_it_answers(demo_home: Path) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        answer = await g.agent("support").answer(QUESTION, alternates=["business_generation"])
    assert answer.collection == "support" and "180 days" in answer.answer


async def test_a_routed_question_names_the_collection_it_was_answered_from(
    demo_home: Path,
) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        result = await g.ask(QUESTION)
    assert result.answer.collection == "support"
    assert result.answer.sources[0].source == "refunds.md"


def test_a_name_the_knowledge_base_never_mentions_is_caught_even_beside_known_ones() -> None:
    def embed_many(texts: object) -> np.ndarray:
        return np.zeros((len(list(texts)), 4), dtype=np.float32)  # type: ignore[arg-type]

    scorer = EvidenceScorer(embed_many, lambda text: np.zeros(4, dtype=np.float32))
    scorer.set_vocabulary(vocabulary(["Nimbus Ledger resets 2FA", "Invoices in JPY"]))
    assert (
        scorer.assess("Does Nimbus Ledger work with Zapier?", None, [0.5], ["x"]).evidence.names
        == 0.0
    )
    assert (
        scorer.assess("How do I reset 2FA in Nimbus Ledger?", None, [0.5], ["x"]).evidence.names
        == 1.0
    )
