"""The request in a task, without the code pasted into it.

Pasted code is material, not the request: its identifiers ("charge(card)", "customer",
"SELECT * FROM users") read as product topics to an embedder, and sent code-review tasks to
support and documentation. The router embeds the prose around the code instead ("Anything
wrong here?", "Give me feedback on this handler:").
"""

from __future__ import annotations

import itertools
import re

# A line that starts like a statement: a definition, control flow, an import, a decorator,
# a comment, a diff line (a bullet, "- Plan: Growth", is not one) or a JavaScript declaration.
_STATEMENT = re.compile(
    r"""^\s*(
        (async\s+)?def\s+\w+\s*\( | class\s+\w+\s*[(:] | return\b | import\s+\w
      | from\s+[\w.]+\s+import\b | try\s*: | except\b.*: | finally\s*: | raise\s+\w
      | else\s*: | for\s+[\w, ()]+\s+in\s+\S.*: | (if|elif|while)\s(?=[^:]*[=<>(.\[])[^:]*:
      | with\s+.+\s+as\s+\w+\s*: | [\w.\[\]]+\s*[-+*/]?=\s*[^=\s]
      | @\w+ | \#\s | //\s | (const|let|var)\s+\w+\s*= | function\s+\w+\s*\(
      | diff\s+--git\b | @@\s | [+-](\s{2,}|(?=\S)).*[()=]
    )""",
    re.VERBOSE,
)
# Characters that are rare in prose and common in code.
_SYMBOLS = re.compile(r"[()\[\]{}=<>;+*/%&|]")
# Where inline code may start after prose on the same line: after "?", ":" or "!" and a space.
_INLINE_START = re.compile(r"(?<=[?:!])\s+")
# Inline code follows a short lead-in ("Is this OK? ..."): only the first few places are
# tried, which keeps a long line linear (each try reads the rest of the line; trying every
# "? " of a 100 kB line took 24 s).
INLINE_TRIES = 3
# The least share of symbols among a fragment's non-space characters for it to be code.
SYMBOL_SHARE = 0.1
# A request shorter than this (in words) says too little to route on alone.
MIN_REQUEST_WORDS = 2


def is_code(fragment: str) -> bool:
    """Whether ``fragment`` (a line or the tail of one) reads as code rather than prose."""
    text = fragment.strip()
    return bool(text) and (_STATEMENT.match(text) is not None or _symbol_dense(text))


def request_text(task: str) -> str:
    """``task`` without its pasted code: whole code lines (and the indented or diff lines
    after them) and inline code after prose ("Is this OK? logger.info(f'...')") are dropped;
    the task itself when it holds no code, or when too little prose is left to route on."""
    return read_request(task)[0]


def read_request(task: str) -> tuple[str, bool]:
    """`request_text` and whether ``task`` holds pasted code: also when too little prose is
    left to route on ("Review:" above a function), so the request is the whole task."""
    prose: list[str] = []
    in_code = code = False
    for line in task.splitlines():
        # A block goes on while its lines are indented or diff lines ("    pass", "+import os").
        if in_code and line[:1] in (" ", "\t", "+", "-"):
            continue
        kept = _prose_part(line)
        in_code = kept != line
        code = code or in_code  # a line dropped or cut as code (a blank line is kept)
        if kept:
            prose.append(kept)
    request = "\n".join(prose).strip()
    if not code or len(request.split()) < MIN_REQUEST_WORDS:
        return task, code
    return request, code


def _prose_part(line: str) -> str:
    """The prose at the start of ``line``: empty for a code line, cut where code begins."""
    if _STATEMENT.match(line.strip()):
        return ""
    for match in itertools.islice(_INLINE_START.finditer(line), INLINE_TRIES):
        if is_code(line[match.end() :]):
            return line[: match.start()]
    return "" if _symbol_dense(line) else line


def _symbol_dense(text: str) -> bool:
    dense = [c for c in text if not c.isspace()]
    share = len(_SYMBOLS.findall(text)) / max(len(dense), 1)
    return share >= SYMBOL_SHARE and ("(" in text or "=" in text)
