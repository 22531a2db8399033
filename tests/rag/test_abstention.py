"""Abstention end to end: an unanswerable question says so, lists "see also" articles and
calls no model (a fake OpenAI-compatible server counts the calls); an answerable one is
answered by the model, whose system prompt still asks it to say when the context falls short."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genesis.app import Genesis
from genesis.observability import (
    allow_labels,
    disable_metrics,
    enable_metrics,
    render_metrics,
)
from genesis.rag import NOT_ANSWERED
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "open-mistral-7b"
FINETUNED = "ft:open-mistral-7b:genesis:support-v3"
# From the tuning split: nothing in the demo knowledge base answers these.
UNANSWERABLE = [
    "Is Nimbus Ledger HIPAA compliant for medical practices?",
    "What's the weather going to be like in Paris tomorrow?",
]
ANSWERABLE = "How many days after a payment can I still refund it?"


@pytest.fixture
def model_server(tokenizers_dir: Path) -> Iterator[FakeOpenAIServer]:
    served = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    with FakeOpenAIServer(served, [FINETUNED, MODEL]) as server:
        yield server


@pytest.fixture
def metrics() -> Iterator[None]:
    enable_metrics()
    allow_labels(agents=["support"])
    yield
    disable_metrics()


def _overrides(demo_home: Path, server: FakeOpenAIServer) -> dict[str, str]:
    return {
        "home": str(demo_home),
        "llm.backend": "chat",
        "llm.base_url": server.base_url,
        "llm.default_model": MODEL,
        "llm.timeout_s": "5",
        "llm.attempt_timeout_s": "2",
    }


@pytest.mark.parametrize("question", UNANSWERABLE)
async def test_unanswerable_question_abstains_without_calling_the_model(
    demo_home: Path, model_server: FakeOpenAIServer, metrics: None, question: str
) -> None:
    async with Genesis.from_config(
        "dev", environ={}, overrides=_overrides(demo_home, model_server)
    ) as genesis:
        result = await genesis.ask(question, agent="support")
    answer = result.answer
    assert answer.abstained is True
    assert model_server.calls() == []  # the model was never asked
    assert answer.answer.startswith(NOT_ANSWERED)
    assert answer.sources == [] and 1 <= len(answer.see_also) <= 3
    assert [s.number for s in answer.see_also] == list(range(1, len(answer.see_also) + 1))
    assert all(s.source in answer.answer for s in answer.see_also)
    assert answer.as_dict()["abstained"] is True  # what --json and the API carry
    exposition = render_metrics()[0].decode()
    assert 'genesis_model_calls_saved_total{agent="support"} 1.0' in exposition
    assert 'genesis_abstentions_total{agent="support"} 1.0' in exposition


async def test_answerable_question_goes_to_the_model_with_an_honest_system_prompt(
    demo_home: Path, model_server: FakeOpenAIServer
) -> None:
    async with Genesis.from_config(
        "dev", environ={}, overrides=_overrides(demo_home, model_server)
    ) as genesis:
        result = await genesis.ask(ANSWERABLE, agent="support")
    assert result.answer.abstained is False
    assert result.answer.as_dict()["abstained"] is False
    [call] = model_server.calls(endpoint="chat")
    system = call["messages"][0]
    assert system["role"] == "system"
    assert "does not answer the question" in system["content"]
    assert ANSWERABLE in call["messages"][-1]["content"]
    assert result.answer.answer == f"Reply from {call['model']}."


async def test_offline_answer_quotes_the_fact_and_does_not_abstain(demo_home: Path) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        result = await g.ask(ANSWERABLE)
    answer = result.answer
    # The router may send it to support or documentation (both describe refunds); the
    # answer comes from the collection that holds the fact.
    assert result.agent in ("support", "documentation")
    assert (answer.collection, answer.abstained, answer.extractive) == ("support", False, True)
    assert "180 days" in answer.answer
    assert [s.source for s in answer.sources][0] == "refunds.md"
    assert set(answer.evidence) == {
        "dense",
        "lexical",
        "sentence",
        "coverage",
        "known",
        "names",
        "best",
        "phrases",
        "answer",
        "score",
        "threshold",
    }
    # Abstaining below the threshold: this answer's score is above it.
    assert answer.evidence["score"] >= answer.evidence["threshold"]


async def test_abstention_can_be_switched_off(demo_home: Path) -> None:
    overrides = {"home": str(demo_home), "answers.abstain": "false"}
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        result = await genesis.ask(UNANSWERABLE[0], agent="support")
    assert result.answer.abstained is False and result.answer.sources


async def test_a_routed_question_weighs_every_collection_but_calls_the_model_once(
    demo_home: Path, model_server: FakeOpenAIServer
) -> None:
    async with Genesis.from_config(
        "dev", environ={}, overrides=_overrides(demo_home, model_server)
    ) as genesis:
        result = await genesis.ask(ANSWERABLE)  # routed: the other collections are weighed too
    assert result.answer.abstained is False and result.answer.collection == "support"
    [call] = model_server.calls()
    assert "180 days" in call["messages"][-1]["content"]  # the context of the chosen collection
