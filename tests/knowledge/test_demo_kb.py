"""The demo knowledge base that ships with Genesis: shape, key facts, and originality.

The demo text must be the project's own: a check proves that no 12-word window of any demo
file occurs in the shared public corpora (docs and support), which tests may read but the
project must never copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import genesis

DEMO_KB = Path(genesis.__file__).parent / "demo_kb"
COLLECTIONS = ("support", "documentation", "business_generation", "qa", "code_review", "se_darwin")
WINDOW = 12
CORPUS_SUFFIXES = {".md", ".mdx", ".txt", ".rst"}
KNOWN_KEY_PREFIXES = {"nl_live_", "nl_test_", "nl_rk_live_", "nl_rk_test_"}
_WORD = re.compile(r"[a-z0-9]+")


def _demo_files() -> list[Path]:
    return sorted(DEMO_KB.rglob("*.md"))


def _sections(text: str) -> list[str]:
    """Split Markdown at ``## `` headings outside code fences; item 0 is the title and intro."""
    sections: list[list[str]] = [[]]
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            sections.append([])
        sections[-1].append(line)
    return ["\n".join(lines) for lines in sections]


def _window_hashes(text: str) -> Iterator[int]:
    words = _WORD.findall(text.lower())
    for start in range(len(words) - WINDOW + 1):
        yield hash(tuple(words[start : start + WINDOW]))


def _collection_text(name: str) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((DEMO_KB / name).glob("*.md")))


def test_readme_states_origin_and_licence() -> None:
    readme = (DEMO_KB / "README.md").read_text(encoding="utf-8")

    assert "fictional" in readme
    assert "MIT" in readme


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_collection_has_at_least_four_markdown_files(collection: str) -> None:
    files = list((DEMO_KB / collection).glob("*.md"))

    assert len(files) >= 4, f"{collection} has {len(files)} Markdown files"


@pytest.mark.parametrize("path", _demo_files(), ids=lambda p: str(p.relative_to(DEMO_KB)))
def test_file_has_title_and_sections(path: Path) -> None:
    text = path.read_text(encoding="utf-8")

    sections = _sections(text)

    assert text.strip(), f"{path.name} is empty"
    assert text.startswith("# "), f"{path.name} does not start with a '# ' heading"
    assert len(sections) - 1 >= 2, f"{path.name} has fewer than 2 '## ' sections"


@pytest.mark.parametrize("path", _demo_files(), ids=lambda p: str(p.relative_to(DEMO_KB)))
def test_sections_are_short_enough_to_quote(path: Path) -> None:
    # Sections are written at 60-250 words; the bounds here leave room for small edits.
    for section in _sections(path.read_text(encoding="utf-8"))[1:]:
        words = len(section.split())
        heading = section.splitlines()[0]
        assert 40 <= words <= 300, f"{path.name} {heading!r}: {words} words"


@pytest.mark.parametrize(
    ("collection", "fact"),
    [
        ("support", "To rotate an API key, sign in to the dashboard"),
        ("support", "Settings → Developers → API keys"),
        ("support", "grace period of 24 hours"),
        ("support", "Revoke now"),
        ("support", "Error 429 means"),
        ("support", "How do I verify a webhook signature?"),
        ("support", "Refunds to cards usually reach the customer in 5 to 10 business days"),
        ("support", "reset two-factor authentication"),
        ("documentation", "Two regions are available"),
        ("documentation", "Nimbus-Signature"),
        ("documentation", "Idempotency-Key"),
        ("documentation", "rate_limit_exceeded"),
        ("code_review", "mutable default"),
        ("code_review", "Critical"),
        ("qa", "@pytest.mark.parametrize"),
        ("qa", "hypothesis"),
        ("se_darwin", "test pass rate"),
        ("business_generation", "TAM"),
    ],
)
def test_collection_states_key_fact(collection: str, fact: str) -> None:
    assert fact.lower() in _collection_text(collection).lower()


def test_only_documented_api_key_prefixes_are_used() -> None:
    text = "\n".join(_collection_text(name) for name in ("support", "documentation"))

    prefixes = set(re.findall(r"\bnl_(?:rk_)?[a-z]+_", text))

    assert prefixes <= KNOWN_KEY_PREFIXES, prefixes - KNOWN_KEY_PREFIXES
    assert {"nl_live_", "nl_test_"} <= prefixes


def test_no_text_is_copied_from_the_shared_corpora(corpora_dir: Path) -> None:
    demo: dict[int, Path] = {}
    for path in _demo_files():
        for window in _window_hashes(path.read_text(encoding="utf-8")):
            demo[window] = path
    corpus_files = [
        p
        for folder in ("docs", "support")
        for p in (corpora_dir / folder).rglob("*")
        if p.suffix in CORPUS_SUFFIXES
    ]
    assert corpus_files, f"no corpus text found under {corpora_dir}"

    copied = {
        (demo[window].name, source.name)
        for source in corpus_files
        for window in _window_hashes(source.read_text(encoding="utf-8", errors="replace"))
        if window in demo
    }

    assert not copied, f"12-word windows shared with the corpora: {sorted(copied)}"
