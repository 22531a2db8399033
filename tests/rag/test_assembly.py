"""Prompt assembly in token space: layout, stable order, exact budget, truncation, messages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import PromptBudgetError
from genesis.knowledge._types import Chunk, content_hash
from genesis.rag._assembly import AssembledPrompt, PromptAssembler, PromptTemplate
from genesis.rag._history import Turn
from genesis.tokens import HFTokenizer, TokenIds
from genesis.tokens._segments import SegmentEncoder

QUERY = "How do I declare a path parameter with a type?"


def _chunk(source: str, ordinal: int, text: str, heading: str = "Path Parameters") -> Chunk:
    return Chunk(
        id=f"{source}#{ordinal}",
        collection="docs",
        source=source,
        heading=heading,
        ordinal=ordinal,
        text=text,
        hash=content_hash(text),
    )


# In rank order: the best hit first, deliberately not in (source, ordinal) order.
CHUNKS = [
    _chunk(
        "tutorial/path-params.md",
        2,
        "You can declare the type of a path parameter:\n\n"
        "```python\nasync def read_item(item_id: int):\n    return {'item_id': item_id}\n```",
    ),
    _chunk("tutorial/path-params.md", 0, "Path parameters use Python format-string syntax."),
    _chunk("advanced/routing.md", 5, "  Order matters: /users/me before /users/{id}.  \n\n"),
    _chunk("tutorial/query-params.md", 1, "Query parameters are the key-value pairs after ?.", ""),
]


@pytest.fixture(scope="module")
def mistral(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")


@pytest.fixture
async def assembler(mistral: HFTokenizer) -> PromptAssembler:
    built = PromptAssembler(SegmentEncoder(mistral))
    await built.warm_up()
    return built


async def _cached_ids(assembler: PromptAssembler, chunks: Sequence[Chunk]) -> list[TokenIds]:
    """What the token cache would hand back: the encoder's IDs of each chunk segment."""
    texts = [assembler.chunk_segment_text(c) for c in chunks]
    return await assembler.encoder.encode_batch(texts)


async def _assemble(
    assembler: PromptAssembler, chunks: Sequence[Chunk], budget: int = 4096
) -> AssembledPrompt:
    ids = await _cached_ids(assembler, chunks)
    return await assembler.assemble(QUERY, chunks, ids, budget_tokens=budget)


async def test_ids_equal_the_encoding_of_the_prompt_text(
    assembler: PromptAssembler, mistral: HFTokenizer
) -> None:
    prompt = await _assemble(assembler, CHUNKS)
    assert prompt.ids.dtype == np.uint32
    assert not prompt.truncated
    assert np.array_equal(prompt.ids, mistral.encode_batch_sync([prompt.text])[0])


async def test_layout_is_system_context_chunks_then_question(assembler: PromptAssembler) -> None:
    prompt = await _assemble(assembler, CHUNKS)
    text = prompt.text
    assert text.startswith(assembler.template.system)
    assert text.endswith(f"Question: {QUERY}\nAnswer:\n")
    positions = [text.index(f"[{n}]\n") for n in (1, 2, 3, 4)]
    assert text.index("Context:\n") < positions[0] and positions == sorted(positions)
    # The header line goes first, so a chunk keeps its own leading indentation.
    assert (
        "advanced/routing.md — Path Parameters\n  Order matters: /users/me before /users/{id}.\n[2]"
        in text
    )
    assert "tutorial/query-params.md\nQuery parameters" in text  # no heading, no dash
    names = [s.name for s in prompt.segments]
    assert names[:4] == ["system", "context", "marker:1", "chunk:1"]
    assert names[-1] == "query"


async def test_chunks_are_laid_out_by_source_and_ordinal_with_numbers_in_prompt_order(
    assembler: PromptAssembler,
) -> None:
    prompt = await _assemble(assembler, CHUNKS)
    laid_out = [(item.number, item.chunk.source, item.chunk.ordinal) for item in prompt.included]
    assert laid_out == [
        (1, "advanced/routing.md", 5),
        (2, "tutorial/path-params.md", 0),
        (3, "tutorial/path-params.md", 2),
        (4, "tutorial/query-params.md", 1),
    ]


async def test_the_same_chunks_in_another_rank_order_give_the_same_ids(
    assembler: PromptAssembler,
) -> None:
    first = await _assemble(assembler, CHUNKS)
    second = await _assemble(assembler, CHUNKS[::-1])
    assert np.array_equal(first.ids, second.ids)


async def test_a_chunk_segment_holds_no_citation_number(assembler: PromptAssembler) -> None:
    text = assembler.chunk_segment_text(CHUNKS[0])
    assert text.startswith("tutorial/path-params.md — Path Parameters\nYou can declare")
    assert text.endswith("```\n") and "[1]" not in text


async def test_token_counts_and_segments_cover_the_ids_exactly(
    assembler: PromptAssembler,
) -> None:
    prompt = await _assemble(assembler, CHUNKS)
    counts = prompt.token_counts
    assert counts["template"] + counts["chunks"] + counts["query"] == len(prompt.ids)
    assert 0 < counts["system"] < counts["template"]
    starts = [s.start for s in prompt.segments]
    ends = [s.start + s.length for s in prompt.segments]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == len(prompt.ids)
    assert "".join(s.text for s in prompt.segments) == prompt.text


async def test_the_budget_is_exact_and_drops_whole_chunks_in_rank_order(
    assembler: PromptAssembler, mistral: HFTokenizer
) -> None:
    full = await _assemble(assembler, CHUNKS)
    assert len((await _assemble(assembler, CHUNKS, budget=len(full.ids))).ids) == len(full.ids)
    tight = await _assemble(assembler, CHUNKS, budget=len(full.ids) - 1)
    assert [c.id for c in tight.dropped] == [CHUNKS[3].id]  # the lowest-ranked goes first
    floor = full.token_counts["system"] + full.token_counts["query"]
    for budget in range(len(full.ids) - 1, floor - 1, -3):
        prompt = await _assemble(assembler, CHUNKS, budget=budget)
        assert len(prompt.ids) <= budget
        kept = len(prompt.included)
        assert [c.id for c in prompt.dropped] == [c.id for c in CHUNKS[kept:]]
        if not prompt.truncated:
            assert np.array_equal(prompt.ids, mistral.encode_batch_sync([prompt.text])[0])


async def test_the_first_chunk_is_cut_at_the_budget_when_nothing_else_fits(
    assembler: PromptAssembler, mistral: HFTokenizer
) -> None:
    alone = await _assemble(assembler, CHUNKS[:1])
    budget = len(alone.ids) - 5
    prompt = await _assemble(assembler, CHUNKS, budget=budget)
    assert prompt.truncated and len(prompt.ids) == budget
    [item] = prompt.included
    assert item.truncated and item.chunk.id == CHUNKS[0].id and item.number == 1
    assert [c.id for c in prompt.dropped] == [c.id for c in CHUNKS[1:]]
    assert prompt.text == mistral.decode_sync(prompt.ids)


async def test_fixed_parts_over_the_budget_raise_with_the_numbers(
    assembler: PromptAssembler,
) -> None:
    full = await _assemble(assembler, CHUNKS)
    floor = full.token_counts["system"] + full.token_counts["query"]
    assert len((await _assemble(assembler, CHUNKS, budget=floor)).ids) == floor
    with pytest.raises(PromptBudgetError, match=rf"need {floor} tokens.*budget of {floor - 1}"):
        await _assemble(assembler, CHUNKS, budget=floor - 1)


async def test_no_chunks_means_no_context_header(assembler: PromptAssembler) -> None:
    prompt = await _assemble(assembler, [])
    assert "Context:" not in prompt.text and prompt.included == [] and prompt.dropped == []


async def test_more_chunks_than_pre_tokenized_markers(
    mistral: HFTokenizer,
) -> None:
    assembler = PromptAssembler(SegmentEncoder(mistral), PromptTemplate(max_markers=2))
    chunks = [_chunk("faq.md", i, f"Answer number {i}.") for i in range(12)]
    prompt = await _assemble(assembler, chunks)
    assert [item.number for item in prompt.included] == list(range(1, 13))
    assert "[12]\nfaq.md — Path Parameters\nAnswer number 11." in prompt.text
    assert np.array_equal(prompt.ids, mistral.encode_batch_sync([prompt.text])[0])


async def test_mismatched_inputs_are_refused(assembler: PromptAssembler) -> None:
    ids = await _cached_ids(assembler, CHUNKS[:2])
    with pytest.raises(ValueError, match="3 chunks but 2"):
        await assembler.assemble(QUERY, CHUNKS[:3], ids, budget_tokens=4096)
    with pytest.raises(ValueError, match="budget_tokens must be positive"):
        await assembler.assemble(QUERY, CHUNKS[:2], ids, budget_tokens=0)
    with pytest.raises(ValueError, match="query is empty"):
        await assembler.assemble(" \n ", CHUNKS[:2], ids, budget_tokens=4096)


async def test_messages_split_system_and_user(assembler: PromptAssembler) -> None:
    system, user = assembler.messages(await _assemble(assembler, CHUNKS))
    assert (system.role, user.role) == ("system", "user")
    assert system.content == assembler.template.system
    assert user.content.startswith("Context:\n[1]\n")
    assert user.content.endswith(f"Question: {QUERY}")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("chunk_header_format", "[{n}] {source}", "must not contain"),
        ("marker_format", "[n]", "must contain"),
        ("system", "  ", "system is empty"),
        ("max_markers", 0, "max_markers"),
    ],
)
def test_bad_templates_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PromptTemplate(**{field: value})  # type: ignore[arg-type]


async def test_history_keeps_the_newest_turns_that_fit_exactly(assembler: PromptAssembler) -> None:
    turns = [
        Turn.exchange(f"Question {n}: how do path parameters work?", f"Answer {n}: typed args.")
        for n in range(3)
    ]
    ids = await assembler.encoder.encode_batch([t.segment_text() for t in turns])
    full = await assembler.assemble(
        QUERY, [], [], budget_tokens=4096, history=turns, history_ids=ids
    )
    assert (full.history_turns, full.history_dropped) == (3, 0)
    assert full.token_counts["history"] == sum(len(i) for i in ids)
    fixed = full.token_counts["system"] + full.token_counts["query"]
    header = next(s.length for s in full.segments if s.name == "history")
    need = header + len(ids[1]) + len(ids[2])
    # History may use half of the room left after the system prompt and the question.
    two = await assembler.assemble(
        QUERY, [], [], budget_tokens=fixed + 2 * need, history=turns, history_ids=ids
    )
    assert (two.history_turns, two.history_dropped) == (2, 1)
    assert [s.text for s in two.segments if s.name.startswith("turn:")] == [
        t.segment_text() for t in turns[1:]
    ]
    one = await assembler.assemble(
        QUERY, [], [], budget_tokens=fixed + 2 * need - 2, history=turns, history_ids=ids
    )
    assert one.history_turns == 1


async def test_history_sits_after_the_chunks_and_before_the_question(
    assembler: PromptAssembler,
) -> None:
    turns = [Turn.exchange("What is a path parameter?", "A part of the URL path.")]
    ids = await assembler.encoder.encode_batch([t.segment_text() for t in turns])
    chunk_ids = await _cached_ids(assembler, CHUNKS)
    prompt = await assembler.assemble(
        QUERY, CHUNKS, chunk_ids, budget_tokens=4096, history=turns, history_ids=ids
    )
    names = [s.name for s in prompt.segments]
    assert names.index("chunk:4") < names.index("history") < names.index("turn:0")
    assert names[-1] == "query"
    assert prompt.text.index("User: What is a path parameter?") > prompt.text.index("Context:")
    # The stable prefix (system prompt and chunks) is the same as without history.
    plain = await assembler.assemble(QUERY, CHUNKS, chunk_ids, budget_tokens=4096)
    prefix = plain.segments[-1].start
    assert np.array_equal(prompt.ids[:prefix], plain.ids[:prefix])
