"""The offline extractive answerer: best sentences, citation markers, honest wording."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import LLMBadRequestError
from genesis.llm import Citation, ExtractiveBackend, GenerationRequest, LLMBackend, Message
from genesis.llm._extractive import NOTHING_FOUND, PREFIX, select_sentences, terms

CONTEXTS = [
    "Redis is an in-memory data store. It is often used as a cache in front of a database. "
    "The weather in Paris was mild last spring.",
    "Bananas are rich in potassium. Many people eat them for breakfast.",
    "A token cache stores the token IDs of each chunk. Cached token IDs are reused by every "
    "request, so chunks are tokenized only once.",
]


def _request(query: str, texts: list[str], **kwargs: object) -> GenerationRequest:
    contexts = [Citation(i + 10, f"c{i}", f"src{i}.md", "") for i in range(len(texts))]
    return GenerationRequest(
        model="m",
        query=query,
        messages=[Message("user", query)],
        contexts=contexts,
        context_texts=texts,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_answers_with_the_relevant_sentences_and_their_markers() -> None:
    generation = await ExtractiveBackend().generate(
        _request("How does the token cache reuse cached token IDs?", CONTEXTS)
    )
    assert generation.extractive is True
    assert generation.text.startswith(PREFIX)
    assert "token IDs of each chunk. [12]" in generation.text
    assert "Bananas" not in generation.text
    assert "weather" not in generation.text
    assert [c.number for c in generation.citations] == [12]


async def test_quotes_the_best_sentences_first_and_cites_in_order_of_quoting() -> None:
    # Best first (was: prompt order): the sentence that answers leads the answer.
    generation = await ExtractiveBackend().generate(
        _request("Is Redis used as a cache for token IDs?", CONTEXTS)
    )
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", generation.text)]
    assert markers[0] == 12 and 11 not in markers
    assert [c.number for c in generation.citations] == list(dict.fromkeys(markers))
    assert 2 <= len(markers) <= 4


async def test_without_contexts_says_nothing_was_found() -> None:
    generation = await ExtractiveBackend().generate(_request("anything at all?", []))
    assert generation.text == NOTHING_FOUND
    assert generation.citations == [] and generation.extractive


async def test_no_overlap_is_reported_as_nothing_found() -> None:
    generation = await ExtractiveBackend().generate(_request("quantum chromodynamics", CONTEXTS))
    assert generation.text == NOTHING_FOUND


async def test_usage_counts_the_prompt_ids_and_no_completion_tokens() -> None:
    request = _request("token cache", CONTEXTS, prompt_ids=np.arange(37, dtype=np.uint32))
    generation = await ExtractiveBackend().generate(request)
    assert (generation.usage.prompt_tokens, generation.usage.completion_tokens) == (37, 0)


async def test_mismatched_contexts_and_texts_are_refused() -> None:
    request = _request("token cache", CONTEXTS)
    request.contexts = request.contexts[:1]
    with pytest.raises(LLMBadRequestError, match="pair up"):
        await ExtractiveBackend().generate(request)


def test_terms_drop_stop_words_and_merge_inflections() -> None:
    assert terms("The caches are caching what was cached") == ["cach"] * 3
    assert "the" not in terms("the token")


def test_is_an_llm_backend() -> None:
    assert isinstance(ExtractiveBackend(), LLMBackend)


def test_on_a_real_fastapi_page_the_best_sentence_mentions_the_query(corpora_dir: Path) -> None:
    page = (corpora_dir / "docs/fastapi/tutorial/path-params.md").read_text(encoding="utf-8")
    paragraphs = [p for p in page.split("\n\n") if len(p) > 80][:40]
    chosen = select_sentences("How do I declare a path parameter with a type?", paragraphs)
    assert 2 <= len(chosen) <= 4
    assert any("path parameter" in s.text.lower() for s in chosen)
    assert not any("```" in s.text for s in chosen)


def test_headings_and_questions_are_never_quoted() -> None:
    from genesis.llm._extractive import select_sentences

    text = (
        "# How to rotate a key\n\n## How do I rotate a key?\n\n"
        "To rotate a key, open Settings and click Rotate. The old key keeps working for a day."
    )
    chosen = [s.text for s in select_sentences("How do I rotate a key?", [text])]
    assert chosen
    assert all(not t.startswith("#") and not t.endswith("?") for t in chosen)
    assert "To rotate a key, open Settings and click Rotate." in chosen
