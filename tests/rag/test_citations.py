"""Citation numbers run 1, 2, 3... in the answer and in the source list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genesis.app import Genesis
from genesis.llm import Citation
from genesis.rag import Source, renumber_citations

TUNE = Path(__file__).resolve().parents[2] / "benchmarks/data/answer_quality/tune_questions.jsonl"


def _sources(*numbers: int) -> list[Source]:
    return [Source(n, f"f{n}.md", "", f"c{n}", 0.5) for n in numbers]


def test_markers_are_renumbered_in_order_of_first_citation() -> None:
    text, sources = renumber_citations("A [3]. B [5]. C [3]. D [1].", _sources(1, 2, 3, 4, 5))
    assert text == "A [1]. B [2]. C [1]. D [3]."
    assert [(s.number, s.source) for s in sources] == [(1, "f3.md"), (2, "f5.md"), (3, "f1.md")]


def test_backend_citations_choose_the_sources() -> None:
    cited = [Citation(4, "c4", "f4.md", ""), Citation(2, "c2", "f2.md", "")]
    text, sources = renumber_citations("X [2] then [4].", _sources(1, 2, 3, 4), cited)
    assert text == "X [1] then [2]."
    assert [s.source for s in sources] == ["f2.md", "f4.md"]


def test_an_answer_without_markers_keeps_every_source_numbered_from_one() -> None:
    text, sources = renumber_citations("No markers here.", _sources(2, 3))
    assert text == "No markers here."
    assert [s.number for s in sources] == [1, 2]


def test_unknown_markers_are_left_alone() -> None:
    text, sources = renumber_citations("Y [9] and [2].", _sources(2))
    assert (text, [s.number for s in sources]) == ("Y [9] and [1].", [1])


@pytest.mark.slow
async def test_offline_answers_cite_consecutive_numbers(demo_home: Path) -> None:
    lines = TUNE.read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines[:12]]
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        for question in questions:
            answer = (await g.ask(question)).answer
            if answer.abstained:
                continue
            markers = [int(m) for m in re.findall(r"\[(\d+)\]", answer.answer)]
            first_seen = list(dict.fromkeys(markers))
            assert first_seen == list(range(1, len(first_seen) + 1)), answer.answer
            assert [s.number for s in answer.sources] == first_seen
