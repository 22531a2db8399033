"""Split documents and source files into token-bounded chunks along their structure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from genesis.errors import IngestError
from genesis.knowledge._types import Chunk, content_hash

CountTokens = Callable[[str], int]

MARKDOWN_EXTENSIONS = frozenset({".md", ".mdx", ".markdown"})
CODE_EXTENSIONS = frozenset({".py", ".js", ".ts", ".go", ".rs", ".java"})
TEXT_EXTENSIONS = frozenset({".txt", ".rst", ".yaml", ".yml", ".json", ".toml"})
SUPPORTED_EXTENSIONS = MARKDOWN_EXTENSIONS | CODE_EXTENSIONS | TEXT_EXTENSIONS
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.DOTALL)
_TITLE = re.compile(r"""^title:\s*(?P<q>["']?)(.*?)(?P=q)\s*$""", re.MULTILINE)
_PY_TOP = re.compile(r"^(?:async\s+def|def|class)\s+(\w+)")
_CODE_TOP = re.compile(
    r"^(?:export\s+)?(?:default\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:public\s+|private\s+|protected\s+)?"
    r"(?:static\s+|abstract\s+|final\s+|async\s+|unsafe\s+)*"
    r"(?:function\*?|class|interface|enum|type|struct|trait|impl|fn|func|mod|record)\b\s*(\w*)"
)


def chunk_id(collection: str, source: str, ordinal: int) -> str:
    """Stable id of the ``ordinal``-th chunk of ``source`` in ``collection``."""
    key = f"{collection}\x00{source}\x00{ordinal}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def iter_source_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative posix path, path)`` of every supported file under ``folder``, sorted.

    Hidden files and folders, ``__pycache__`` and ``node_modules`` are skipped.
    Raises `IngestError` when ``folder`` is missing or not a folder.
    """
    if not folder.exists():
        raise IngestError(f"cannot ingest {folder}: no such folder")
    if not folder.is_dir():
        raise IngestError(f"cannot ingest {folder}: not a folder")
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(p.startswith(".") or p in _SKIPPED_DIRS for p in rel.parts):
            continue
        if path.suffix.lower() in SUPPORTED_EXTENSIONS and path.is_file():
            yield rel.as_posix(), path


@dataclass(slots=True)
class _Section:
    """Consecutive blocks under one heading breadcrumb (or one code unit)."""

    heading: str
    blocks: list[str] = field(default_factory=list)


def chunk_text(
    text: str, *, source: str, collection: str, max_tokens: int, count_tokens: CountTokens
) -> list[Chunk]:
    """Split ``text`` (the content of ``source``) into chunks of at most ``max_tokens`` tokens.

    Markdown follows headings (breadcrumb "Title > Section"), MDX front matter (its ``title:``
    is the top heading), paragraphs and fenced code blocks (split by lines only when one block
    alone exceeds ``max_tokens``); source code follows top-level definitions; other text
    follows paragraphs. A chunk never spans two sections.
    """
    if max_tokens < 8:
        raise IngestError(f"chunk size must be at least 8 tokens, got {max_tokens}")
    suffix = PurePosixPath(source).suffix.lower()
    if suffix in MARKDOWN_EXTENSIONS:
        sections = _markdown_sections(text)
    elif suffix in CODE_EXTENSIONS:
        sections = _code_sections(text, python=suffix == ".py")
    else:
        sections = [_Section("", _paragraphs(text.splitlines()))]
    packer = _Packer(max_tokens, count_tokens)
    pieces = [(s.heading, body) for s in sections for body in packer.pack(s.blocks)]
    return [
        Chunk(
            id=chunk_id(collection, source, ordinal),
            collection=collection,
            source=source,
            heading=heading,
            ordinal=ordinal,
            text=body,
            hash=content_hash(body),
            metadata={"kind": _kind(suffix)},
        )
        for ordinal, (heading, body) in enumerate(pieces)
    ]


def _kind(suffix: str) -> str:
    if suffix in MARKDOWN_EXTENSIONS:
        return "markdown"
    return "code" if suffix in CODE_EXTENSIONS else "text"


def _split_front_matter(text: str) -> tuple[str, str]:
    """Return ``(title, body)``; the front matter is dropped except its title."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return "", text
    title = _TITLE.search(match.group(1))
    return (title.group(2).strip() if title else ""), text[match.end() :]


def _markdown_sections(text: str) -> list[_Section]:
    title, body = _split_front_matter(text.replace("\r\n", "\n"))
    trail: list[tuple[int, str]] = [(0, title)] if title else []
    sections = [_Section(title)]
    for block in _markdown_blocks(body.splitlines()):
        heading = _HEADING.match(block) if "\n" not in block else None
        if heading is None:
            sections[-1].blocks.append(block)
            continue
        level = len(heading.group(1))
        trail = [t for t in trail if t[0] < level] + [(level, heading.group(2))]
        breadcrumb = " > ".join(name for _, name in trail if name)
        if not _has_body(sections[-1]):
            # A heading with nothing under it yet travels with the next section's text.
            sections[-1] = _Section(breadcrumb, sections[-1].blocks + [block])
        else:
            sections.append(_Section(breadcrumb, [block]))
    return [s for s in sections if s.blocks]


def _has_body(section: _Section) -> bool:
    return any(_HEADING.match(b) is None or "\n" in b for b in section.blocks)


def _markdown_blocks(lines: list[str]) -> Iterator[str]:
    """Yield headings, paragraphs and whole fenced code blocks, in order."""
    buf: list[str] = []
    fence: str | None = None
    for line in lines:
        if fence is not None:
            buf.append(line)
            if line.strip().startswith(fence):
                yield "\n".join(buf)
                buf, fence = [], None
            continue
        opening = _FENCE.match(line)
        if opening or _HEADING.match(line) or not line.strip():
            yield from _flush(buf)
            buf = []
        if opening:
            fence, buf = opening.group(1), [line]
        elif _HEADING.match(line):
            yield line.strip()
        elif line.strip():
            buf.append(line)
    yield from _flush(buf)


def _flush(buf: list[str]) -> Iterator[str]:
    text = "\n".join(buf).strip("\n")
    if text.strip():
        yield text


def _paragraphs(lines: list[str]) -> list[str]:
    blocks: list[str] = []
    buf: list[str] = []
    for line in lines + [""]:
        if line.strip():
            buf.append(line)
        else:
            blocks.extend(_flush(buf))
            buf = []
    return blocks


def _code_sections(text: str, *, python: bool) -> list[_Section]:
    """One section per top-level definition; module-level code between them is its own."""
    pattern = _PY_TOP if python else _CODE_TOP
    sections = [_Section("")]
    pending: list[str] = []  # decorators and comments directly above a definition
    for line in text.replace("\r\n", "\n").splitlines():
        match = pattern.match(line)
        if match is not None:
            name = line.split("(")[0].split("{")[0].strip().rstrip(":")
            sections.append(_Section(name if match.group(1) else "", pending + [line]))
            pending = []
        elif line.startswith(("@", "#", "//", "/*", " *")) and not line.startswith("#!"):
            pending.append(line)
        else:
            sections[-1].blocks.extend(pending + [line])
            pending = []
    sections[-1].blocks.extend(pending)
    return [_Section(s.heading, list(_flush(s.blocks))) for s in sections if _has_code(s)]


def _has_code(section: _Section) -> bool:
    return any(line.strip() for line in section.blocks)


class _Packer:
    """Greedy packing of blocks into texts of at most ``max_tokens`` real tokens.

    Sizes are first estimated as sums of per-piece counts (one tokenizer call per piece);
    each packed text is then counted exactly and halved until it fits, because BPE counts
    are not strictly additive across joins.
    """

    def __init__(self, max_tokens: int, count_tokens: CountTokens) -> None:
        self._max = max_tokens
        self._count = count_tokens

    def pack(self, blocks: list[str]) -> list[str]:
        return self._fit(blocks, "\n\n", self._split_lines)

    def _fit(self, units: list[str], sep: str, split: Callable[[str], list[str]]) -> list[str]:
        out: list[str] = []
        group: list[str] = []
        total = 0
        for unit in units:
            size = self._count(unit)
            if size > self._max:
                out.extend(self._verified(group, sep, split))
                out.extend(split(unit))
                group, total = [], 0
                continue
            if group and total + size > self._max:
                out.extend(self._verified(group, sep, split))
                group, total = [], 0
            group.append(unit)
            total += size
        out.extend(self._verified(group, sep, split))
        return [text for text in out if text.strip()]

    def _verified(self, group: list[str], sep: str, split: Callable[[str], list[str]]) -> list[str]:
        if not group:
            return []
        text = sep.join(group)
        if self._count(text) <= self._max:
            return [text]
        if len(group) == 1:
            return split(group[0])
        half = len(group) // 2
        return self._verified(group[:half], sep, split) + self._verified(group[half:], sep, split)

    def _split_lines(self, block: str) -> list[str]:
        """An oversized block, cut between lines (a line alone too long: between words)."""
        return self._fit(block.splitlines(), "\n", self._split_words)

    def _split_words(self, line: str) -> list[str]:
        words = re.findall(r"\S+\s*", line)
        return [w.rstrip() for w in self._fit(words, "", self._split_chars)]

    def _split_chars(self, word: str) -> list[str]:
        """Last resort for one "word" longer than a chunk (escape sequences, base64)."""
        out: list[str] = []
        while word:
            lo, hi = 1, len(word)
            while lo < hi:  # longest prefix that fits, by bisection
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if self._count(word[:mid]) <= self._max else (lo, mid - 1)
            out.append(word[:lo])
            word = word[lo:]
        return out
