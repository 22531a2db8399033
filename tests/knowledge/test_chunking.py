"""Chunking follows document structure and bounds chunks in real tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesis.errors import IngestError
from genesis.knowledge import chunk_text, content_hash, default_model_dir, iter_source_files
from genesis.tokens import HFTokenizer


@pytest.fixture(scope="module")
def count() -> HFTokenizer:
    return HFTokenizer.from_file(default_model_dir() / "tokenizer.json")


def _chunks(text: str, count: HFTokenizer, source: str = "doc.md", max_tokens: int = 256) -> list:
    return chunk_text(
        text, source=source, collection="c", max_tokens=max_tokens, count_tokens=count.count
    )


MARKDOWN = """# Guide

Intro paragraph.

## Install

Run the installer.

```bash
# not a heading: inside a fence

pip install genesis
```

### Windows

Use PowerShell.

## Use

Call it.
"""


def test_markdown_breadcrumbs_follow_headings(count: HFTokenizer) -> None:
    chunks = _chunks(MARKDOWN, count)
    assert [c.heading for c in chunks] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Windows",
        "Guide > Use",
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert "# not a heading: inside a fence\n\npip install genesis\n```" in chunks[1].text


def test_heading_without_body_travels_with_the_next_section(count: HFTokenizer) -> None:
    chunks = _chunks("# Title\n\n## Part\n\nBody text.\n", count)
    assert len(chunks) == 1
    assert chunks[0].heading == "Title > Part"
    assert chunks[0].text.startswith("# Title\n\n## Part")


def test_mdx_front_matter_gives_the_title_and_is_dropped(count: HFTokenizer) -> None:
    text = (
        '---\ntitle: "About scopes"\nredirect_from:\n  - /old\n---\n\n'
        "Scopes group packages.\n\n## Public\n\nAnyone.\n"
    )
    chunks = _chunks(text, count, source="scopes.mdx")
    assert [c.heading for c in chunks] == ["About scopes", "About scopes > Public"]
    assert all("redirect_from" not in c.text for c in chunks)


def test_fence_is_split_by_lines_only_when_alone_too_long(count: HFTokenizer) -> None:
    code = "\n".join(f"value_{i} = compute({i}, {i + 1})" for i in range(200))
    text = f"# Big\n\nBefore.\n\n```python\n{code}\n```\n\nAfter.\n"
    chunks = _chunks(text, count, max_tokens=64)
    assert len(chunks) > 5
    assert all(count.count(c.text) <= 64 for c in chunks)
    lines = [line for c in chunks for line in c.text.splitlines()]
    assert all(f"value_{i} = compute({i}, {i + 1})" in lines for i in range(200))


def test_one_huge_word_is_still_cut_to_the_limit(count: HFTokenizer) -> None:
    chunks = _chunks("x" * 5000 + "\n", count, source="blob.txt", max_tokens=32)
    assert all(count.count(c.text) <= 32 for c in chunks)
    assert "".join(c.text for c in chunks) == "x" * 5000


def test_python_splits_at_top_level_definitions(count: HFTokenizer) -> None:
    text = (
        "import os\n\n\n@decorator\ndef first(a):\n    return a\n\n\n"
        "class Second:\n    def method(self):\n        pass\n\n\nasync def third():\n    pass\n"
    )
    chunks = _chunks(text, count, source="mod.py", max_tokens=20)
    heads = [c.heading for c in chunks]
    assert heads == ["", "def first", "class Second", "async def third"]
    assert chunks[1].text.startswith("@decorator\ndef first(a):")
    assert "def method" in chunks[2].text


def test_ids_are_stable_and_hashes_address_content(count: HFTokenizer) -> None:
    first, again = _chunks(MARKDOWN, count), _chunks(MARKDOWN, count)
    assert [c.id for c in first] == [c.id for c in again]
    assert len({c.id for c in first}) == len(first)
    assert all(c.hash == content_hash(c.text) for c in first)
    other = chunk_text(MARKDOWN, source="doc.md", collection="d", max_tokens=256, count_tokens=len)
    assert {c.id for c in other}.isdisjoint(c.id for c in first)


@pytest.mark.parametrize(
    ("corpus", "pattern"),
    [
        ("docs/fastapi", "tutorial/*.md"),
        ("support/npm-docs", "about-npm/*.mdx"),
        ("code/rich", "rich/[a-c]*.py"),
    ],
)
def test_real_corpora_chunks_stay_within_the_token_budget(
    corpora_dir: Path, count: HFTokenizer, corpus: str, pattern: str
) -> None:
    files = sorted((corpora_dir / corpus).glob(pattern))[:12]
    assert files
    for path in files:
        chunks = _chunks(path.read_text(encoding="utf-8"), count, source=path.name, max_tokens=128)
        assert chunks, path
        assert max(count.count(c.text) for c in chunks) <= 128, path
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_walk_skips_hidden_caches_and_unsupported_files(tmp_path: Path) -> None:
    for rel in [
        "a.md",
        "sub/b.py",
        "sub/c.bin",
        ".git/d.md",
        "__pycache__/e.py",
        "node_modules/f.js",
        "g.yaml",
        ".hidden.md",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    assert [rel for rel, _ in iter_source_files(tmp_path)] == ["a.md", "g.yaml", "sub/b.py"]


def test_walk_names_a_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no-such-dir"):
        list(iter_source_files(tmp_path / "no-such-dir"))
    (tmp_path / "file.md").write_text("x")
    with pytest.raises(IngestError, match="not a folder"):
        list(iter_source_files(tmp_path / "file.md"))
