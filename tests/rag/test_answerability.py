"""The answerability model: a logistic regression over the evidence and the question's
vector, fitted on one knowledge base, that decides abstention only on the chunks it knows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from genesis.app import Genesis
from genesis.errors import ConfigError
from genesis.rag import (
    PACKAGED_ANSWERABILITY,
    AbstentionPolicy,
    AnswerabilityModel,
    Evidence,
    EvidenceScorer,
    vocabulary,
)
from genesis.rag._evidence import chunks_fingerprint

KB = [
    "Refunds can be issued within 180 days of the payment.",
    "Invoices are numbered in sequence and can be voided before they are paid.",
]
# The question's direction in a 4-dimensional toy embedding: the model below learned that
# questions along the first axis are answerable and along the second are not.
ANSWERABLE = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
UNANSWERABLE = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)


def _zeros(texts: object) -> npt.NDArray[np.float32]:
    return np.zeros((len(list(texts)), 4), dtype=np.float32)  # type: ignore[arg-type]


def _model(knowledge_base: str, embedder: str = "toy") -> AnswerabilityModel:
    features = ("dense",)
    return AnswerabilityModel(
        features=features,
        mean=np.zeros(5),
        scale=np.ones(5),
        # dense weighs a little; the vector's first axis for, the second against.
        weights=np.array([0.5, 4.0, -4.0, 0.0, 0.0]),
        bias=0.0,
        threshold=0.5,
        knowledge_base=knowledge_base,
        embedder=embedder,
    )


def _scorer(model: AnswerabilityModel | None, kb: list[str] = KB) -> EvidenceScorer:
    # A linear policy that would never abstain: only the model can.
    never = AbstentionPolicy(threshold=0.0)
    scorer = EvidenceScorer(_zeros, lambda text: ANSWERABLE, never, model=model, embedder="toy")
    scorer.set_vocabulary(vocabulary(kb))
    return scorer


def test_the_fingerprint_of_chunks_ignores_their_order_and_sees_any_edit() -> None:
    assert chunks_fingerprint(KB) == chunks_fingerprint(list(reversed(KB)))
    assert chunks_fingerprint(KB) != chunks_fingerprint([KB[0], KB[1] + "!"])
    assert chunks_fingerprint(KB) != chunks_fingerprint(KB[:1])
    assert vocabulary(KB).fingerprint == chunks_fingerprint(KB)


def test_the_model_decides_on_the_knowledge_base_it_was_fitted_on() -> None:
    scorer = _scorer(_model(chunks_fingerprint(KB)))
    assert scorer.model_applies
    yes = scorer.assess("Can I refund a payment?", ANSWERABLE, [0.5], KB)
    no = scorer.assess("Can I pay an invoice in parts?", UNANSWERABLE, [0.5], KB)
    assert yes.abstain is False and yes.score > 0.5
    assert no.abstain is True and no.score < 0.5
    assert yes.threshold == no.threshold == 0.5  # the model's
    # The score is the model's probability, from the evidence and the vector.
    expected = 1 / (1 + np.exp(-(0.5 * 0.5 - 4.0)))
    assert no.score == pytest.approx(expected)


def test_another_knowledge_base_or_embedding_model_falls_back_to_the_policy() -> None:
    other = _scorer(_model(chunks_fingerprint(KB)), kb=[*KB, "A new article."])
    assert not other.model_applies
    fallback = other.assess("Can I pay in parts?", UNANSWERABLE, [0.5], KB)
    assert fallback.abstain is False and fallback.threshold == 0.0  # the policy's
    wrong_embedder = _scorer(_model(chunks_fingerprint(KB), embedder="another-model"))
    assert not wrong_embedder.model_applies
    assert not _scorer(None).model_applies


def test_abstention_switched_off_never_abstains_even_with_the_model() -> None:
    scorer = _scorer(_model(chunks_fingerprint(KB)))
    scorer.policy = dataclasses.replace(scorer.policy, enabled=False)
    assert scorer.assess("Can I pay in parts?", UNANSWERABLE, [0.5], KB).abstain is False


def test_a_model_round_trips_through_json() -> None:
    model = _model("kb")
    again = AnswerabilityModel.from_json(json.loads(json.dumps(model.to_json())))
    ev = Evidence(dense=0.3, lexical=0, sentence=0, coverage=0)
    assert again.probability(ev, UNANSWERABLE) == pytest.approx(model.probability(ev, UNANSWERABLE))
    assert (again.knowledge_base, again.embedder, again.threshold) == ("kb", "toy", 0.5)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"features": ["dense", "no_such_feature"]}, "no_such_feature"),
        ({"weights": [1.0, 2.0]}, "one value per feature"),
        ({"scale": [1.0, 0.0, 1.0, 1.0, 1.0]}, "scale must be positive"),
        ({"threshold": 1.5}, "threshold 1.5"),
        ({"bias": "high"}, "malformed"),
    ],
)
def test_a_malformed_model_is_refused_with_what_is_wrong(change: dict, names: str) -> None:
    data = {**_model("kb").to_json(), **change}
    with pytest.raises(ConfigError, match=names):
        AnswerabilityModel.from_json(data)


def test_an_unreadable_model_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        AnswerabilityModel.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        AnswerabilityModel.load(tmp_path / "missing.json")


def test_a_vector_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="3 dimensions, model 4"):
        _model("kb").probability(Evidence(0, 0, 0, 0), np.zeros(3))


def test_the_packaged_model_records_how_it_was_fitted() -> None:
    model = AnswerabilityModel.load(PACKAGED_ANSWERABILITY)
    assert model.dim == 384  # all-MiniLM-L6-v2
    assert model.fitted["on"] == "benchmarks/data/answer_quality/tune_questions.jsonl"
    assert 0.0 < model.threshold < 1.0


@pytest.mark.slow
@pytest.mark.integration
async def test_the_packaged_model_applies_to_the_demo_as_shipped_and_not_once_it_changes(
    tmp_path: Path,
) -> None:
    """The main job's configuration (not dev's) ingests the same chunks the model was fitted
    on; an added article makes it another knowledge base, where the policy decides."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "holidays.md").write_text("# Holidays\n\nThe office is closed on 1 January.\n")
    async with Genesis.from_config(None, environ={}, overrides={"home": str(tmp_path)}) as g:
        await g.ensure_demo()
        assert g._evidence.model_applies
        before = await g.ask("Does Nimbus Ledger integrate with QuickBooks or Xero?")
        assert before.answer.abstained is True
        await g.ingest(extra, "support")
        assert not g._evidence.model_applies


@pytest.mark.slow
@pytest.mark.integration
async def test_settings_choose_the_model_file_its_threshold_or_the_policy(tmp_path: Path) -> None:
    # A home of its own: the shared demo home may hold what other tests ingested, and then
    # it is another knowledge base, where the model does not apply.
    demo_home = tmp_path / "home"
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        await g.ensure_demo()
    question = "How many days after a payment can I still refund it?"
    strict = AnswerabilityModel.load(PACKAGED_ANSWERABILITY).to_json()
    strict["threshold"] = 1.0  # nothing is likely enough: every question abstains
    path = tmp_path / "strict.json"
    path.write_text(json.dumps(strict))
    cases = [
        ({"answers.answerability_file": str(path)}, True, True),
        # An explicit threshold applies to the score that decides: here the model's.
        ({"answers.answerability_file": str(path), "answers.abstain_threshold": "0"}, True, False),
        ({"answers.answerability_model": "false"}, False, False),
    ]
    for overrides, applies, abstained in cases:
        settings = {"home": str(demo_home), **overrides}
        async with Genesis.from_config("dev", environ={}, overrides=settings) as g:
            assert g._evidence.model_applies is applies
            assert (await g.ask(question)).answer.abstained is abstained, overrides


async def test_a_broken_model_file_stops_start_up_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"features": []}')
    settings = {"home": str(tmp_path / "home"), "answers.answerability_file": str(path)}
    malformed = r"broken\.json: answerability model: malformed \(KeyError"
    with pytest.raises(ConfigError, match=malformed):
        async with Genesis.from_config("dev", environ={}, overrides=settings):
            pass
