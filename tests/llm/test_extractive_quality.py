"""Readable extracts: prose, table rows in words (never a raw ``| a | b |`` row), code lines
only for a question about a code sample, no fence debris, front matter or headings; the best
sentence first, no near-duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesis.knowledge import chunk_text
from genesis.llm import RANK_FEATURES, RANKER, Citation, GenerationRequest, Message, Quote
from genesis.llm._extractive import (
    choose_sentences,
    extractive_answer,
    prose_lines,
    rank_sentences,
    sentence_features,
    split_sentences,
)

DEMO_KB = Path(__file__).resolve().parents[2] / "src" / "genesis" / "demo_kb"

DOC = """---
title: Webhooks
sidebar: api
---
# Webhooks

Webhooks tell your server when something happens in your account.

| Event | Sent when |
| --- | --- |
| `payment.failed` | A payment attempt fails |

```python
def verify(raw_body: bytes) -> bool:
    return True
```

    indented_code = "is not prose either"

Failed deliveries are retried with increasing delays for up to 72 hours.
"""


def _looks_like_markup(sentence: str) -> bool:
    return sentence.startswith(("|", "#", "```", "---")) or "| ---" in sentence


def test_only_prose_lines_survive() -> None:
    assert prose_lines(DOC) == [
        "Webhooks tell your server when something happens in your account.",
        "Failed deliveries are retried with increasing delays for up to 72 hours.",
    ]


def test_a_table_row_is_one_sentence_in_words_under_its_header() -> None:
    texts = [s.text for s in split_sentences([DOC])]
    assert "Event: `payment.failed`; Sent when: A payment attempt fails" in texts
    assert not [t for t in texts if "|" in t or "---" in t or t.startswith("Event; ")]
    assert [s.kind for s in split_sentences([DOC])] == ["prose", "row", "prose"]


def test_a_row_cut_from_its_header_keeps_its_cells() -> None:
    text = "| `invoice.voided` | An invoice is voided |\n| `refund.failed` | A refund fails |"
    assert [s.text for s in split_sentences([text])] == [
        "`invoice.voided`; An invoice is voided",
        "`refund.failed`; A refund fails",
    ]


def test_code_lines_are_candidates_only_for_a_question_about_a_code_sample() -> None:
    about_code = "In the Python sample, what does verify() take?"
    plain = split_sentences([DOC], "How long are webhooks retried?")
    assert [s.kind for s in plain] == ["prose", "row", "prose"]
    code = [s.text for s in split_sentences([DOC], about_code) if s.kind == "code"]
    # Each line of the fenced and the indented block as one code span; no fence line.
    assert code == [
        "`def verify(raw_body: bytes) -> bool:`",
        "`return True`",
        '`indented_code = "is not prose either"`',
    ]


def test_the_answer_to_a_question_about_a_sample_can_quote_its_line() -> None:
    text = (
        "Create a customer, then an invoice.\n\n```python\n"
        'customer = client.customers.create(name="Ada", email="ada@example.com")\n```'
    )
    question = "In the Python quickstart, which call makes the customer?"
    sentences = split_sentences([text], question)
    semantic = [0.3, 0.6]  # as MiniLM would say: the code line is about making a customer
    ranked = rank_sentences(question, sentences, semantic)
    quoted = [r.sentence.text for r in choose_sentences(ranked)]
    assert any("client.customers.create" in q for q in quoted)


def test_a_chunk_cut_inside_a_code_block_drops_the_code_before_the_closing_fence() -> None:
    text = 'print("tail of a block")\nreturn parts\n```\n\nThe signature covers the raw body.'
    assert prose_lines(text) == ["The signature covers the raw body."]


def test_a_chunk_cut_after_an_opening_fence_drops_the_code_after_it() -> None:
    text = "Verify the header first.\n\n```python\nimport hmac\nparts = header.split(',')"
    assert prose_lines(text) == ["Verify the header first."]


def test_extracts_of_the_whole_demo_knowledge_base_hold_no_markup() -> None:
    sentences = []
    for path in sorted(DEMO_KB.rglob("*.md")):
        chunks = chunk_text(
            path.read_text(encoding="utf-8"),
            source=path.name,
            collection="demo",
            max_tokens=120,  # small chunks: many cut through tables and code blocks
            count_tokens=lambda text: len(text.split()),
        )
        sentences += split_sentences([c.text for c in chunks])
        # With a question about a sample, code lines join: still no fence or table debris.
        sentences += split_sentences([c.text for c in chunks], "What does the Python sample do?")
    assert len(sentences) > 500
    bad = [s.text for s in sentences if _looks_like_markup(s.text) or "```" in s.text]
    assert bad == []
    assert not [s.text for s in sentences if s.text.count("|") >= 2]
    assert {s.kind for s in sentences} == {"prose", "row", "code"}


def test_the_best_sentence_comes_first_and_near_duplicates_are_dropped() -> None:
    contexts = [
        "Invoices are sent by email. Refunds take 5 to 10 business days to reach a card.",
        "Refunds take 5 to 10 business days to reach the card. Payouts run daily.",
    ]
    sentences = split_sentences(contexts)
    semantic = [0.1, 0.9, 0.85, 0.2]  # as MiniLM would say for "how long do refunds take"
    ranked = rank_sentences("How long do refunds take?", sentences, semantic)
    chosen = [r.sentence.text for r in choose_sentences(ranked)]
    assert chosen[0] == "Refunds take 5 to 10 business days to reach a card."
    assert "Refunds take 5 to 10 business days to reach the card." not in chosen


def test_quotes_from_the_pipeline_are_used_in_their_order() -> None:
    request = GenerationRequest(
        model="m",
        query="q",
        messages=[Message("user", "q")],
        contexts=[Citation(1, "a", "a.md", ""), Citation(2, "b", "b.md", "")],
        context_texts=["First text.", "Second text."],
        quotes=[Quote(1, "Second text.", 0.9), Quote(0, "First text.", 0.5)],
    )
    generation = extractive_answer(request)
    assert generation.text.endswith("Second text. [2] First text. [1]")
    assert [c.number for c in generation.citations] == [2, 1]


@pytest.mark.parametrize("question", ["", "the and of"])
def test_a_question_of_stop_words_ranks_nothing(question: str) -> None:
    assert rank_sentences(question, split_sentences(["Refunds take ten days."])) == []


def test_with_semantic_scores_a_later_chunk_that_answers_beats_the_first_one() -> None:
    sentences = split_sentences(
        ["Webhook deliveries are logged for 30 days.", "Webhook deliveries time out after 10 s."]
    )
    question = "What about webhook deliveries?"  # the same lexical overlap for both
    tied = rank_sentences(question, sentences, [0.5, 0.5])
    assert tied[0].sentence.context == 0  # position only breaks the tie
    ranked = rank_sentences(question, sentences, [0.5, 0.52])
    assert ranked[0].sentence.context == 1  # a better similarity wins from a later chunk


def test_a_where_question_prefers_the_sentence_with_the_menu_path() -> None:
    sentences = split_sentences(
        ["You can create a tax rate for each invoice line.", "Create a tax rate in Settings → Tax."]
    )
    question = "Where do I create a tax rate?"
    ranked = rank_sentences(question, sentences, [0.5, 0.5])
    assert ranked[0].sentence.text == "Create a tax rate in Settings → Tax."
    # The same sentences for a question that asks for no place.
    ranked = rank_sentences("Can I create a tax rate?", sentences, [0.5, 0.5])
    assert ranked[0].sentence.text == "You can create a tax rate for each invoice line."


def test_a_sentence_from_the_more_relevant_chunk_wins_a_tie() -> None:
    sentences = split_sentences(["Refunds take ten days.", "Refunds take ten days to arrive."])
    question = "How long do refunds take?"
    assert rank_sentences(question, sentences, [0.5, 0.5], [0.2, 0.8])[0].sentence.context == 1
    assert rank_sentences(question, sentences, [0.5, 0.5], [0.8, 0.2])[0].sentence.context == 0


def test_the_ranker_weighs_every_feature_and_scores_in_0_1() -> None:
    assert len(RANKER.weights) == len(RANK_FEATURES)
    sentences = split_sentences(["Refunds take ten days.", "Payouts run daily."])
    rows = sentence_features("How long do refunds take?", sentences, [0.9, 0.1], [1.0, 0.0])
    assert all(len(row) == len(RANK_FEATURES) for row in rows)
    scores = [RANKER.score(row) for row in rows]
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores[0] > scores[1]
