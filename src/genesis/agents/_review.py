"""Code review without a model, and the glue for a model's findings.

Parsing unified diffs (file names and NEW-file line numbers of added lines), deterministic
checks of added Python lines for the bug patterns the code-review knowledge base documents
(``ast`` where a hunk parses, line regexes otherwise), citing those guidelines, parsing a
model's ``file:line: severity: message`` findings and merging them with the static ones.
Pure functions, no I/O.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from genesis.agents._tasks import SEVERITIES, Finding, Severity

# -- unified diffs ------------------------------------------------------------------------------

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass(slots=True)
class Hunk:
    """Lines of the NEW file in one hunk: ``(line number, text, added)``."""

    lines: list[tuple[int, str, bool]] = field(default_factory=list)

    @property
    def added(self) -> list[tuple[int, str]]:
        return [(n, t) for n, t, a in self.lines if a]


@dataclass(slots=True)
class FileChange:
    path: str
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def is_python(self) -> bool:
        return PurePosixPath(self.path).suffix in ("", ".py", ".pyi")


def looks_like_diff(text: str) -> bool:
    return any(_HUNK.match(line) for line in text.splitlines()) and "\n+++ " in f"\n{text}"


def parse_review_input(text: str, filename: str | None) -> list[FileChange]:
    """The files to review: a unified diff's changed files, or ``text`` whole as one file.

    Raises ValueError for empty input or a diff that adds no lines.
    """
    if not text.strip():
        raise ValueError("nothing to review: the diff or source is empty")
    if not looks_like_diff(text):
        lines = [(i, line, True) for i, line in enumerate(text.splitlines(), start=1)]
        return [FileChange(filename or "<source>", [Hunk(lines)])]
    changes = parse_unified_diff(text)
    if not any(h.added for c in changes for h in c.hunks):
        raise ValueError("the diff adds no lines: there is nothing new to review")
    return changes


def parse_unified_diff(text: str) -> list[FileChange]:
    """Files of a unified diff with the NEW-file line numbers of their lines."""
    changes: list[FileChange] = []
    current: FileChange | None = None
    hunk: Hunk | None = None
    number = 0
    for line in text.splitlines():
        if line.startswith("+++ "):
            current, hunk = _new_file(line), None
            if current is not None:
                changes.append(current)
        elif (m := _HUNK.match(line)) and current is not None:
            hunk, number = Hunk(), int(m.group(1))
            current.hunks.append(hunk)
        elif hunk is not None and not line.startswith(("-", "\\")):
            if line.startswith(("diff --git", "--- ", "index ")):
                hunk = None
                continue
            hunk.lines.append((number, line[1:], line.startswith("+")))
            number += 1
    return changes


def _new_file(line: str) -> FileChange | None:
    path = line[4:].split("\t", 1)[0].strip()
    if path == "/dev/null":  # a deleted file has no new lines
        return None
    return FileChange(path[2:] if path.startswith("b/") else path)


# -- deterministic review checks -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    severity: Severity
    message: str
    guideline_terms: tuple[str, ...]  # matched against retrieved guideline headings


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "mutable-default",
            "major",
            "mutable default argument is shared between calls; default to None and create "
            "it inside the function",
            ("mutable default",),
        ),
        Rule(
            "bare-except",
            "major",
            "bare `except:` also catches KeyboardInterrupt, SystemExit and bugs; catch the "
            "narrowest exception you can handle",
            ("bare except", "swallowed"),
        ),
        Rule(
            "swallowed-exception",
            "major",
            "`except Exception: pass` hides every failure; handle it, log it with the "
            "traceback, or re-raise with context",
            ("swallowed", "bare except"),
        ),
        Rule(
            "sql-injection",
            "critical",
            "SQL built with string formatting is passed to execute(); pass values as query "
            "parameters instead",
            ("sql injection", "parameteris", "sql"),
        ),
        Rule(
            "hard-coded-secret",
            "critical",
            "hard-coded secret in source; read it from configuration or a secret manager "
            "and rotate it",
            ("secrets in code", "secret"),
        ),
        Rule(
            "open-without-with",
            "minor",
            "open() without `with` leaks the file when an exception is raised; use a "
            "context manager",
            ("resource leak",),
        ),
        Rule(
            "naive-datetime",
            "major",
            "timezone-naive datetime; use datetime.now(timezone.utc)",
            ("timezone-naive", "timezone", "datetime"),
        ),
        Rule(
            "eval-exec",
            "major",
            "eval()/exec() runs arbitrary code; parse the input instead (e.g. "
            "ast.literal_eval, json.loads)",
            ("security", "user input"),
        ),
        Rule(
            "unbounded-retry",
            "major",
            "`while True` retry loop with no bound: limit attempts and total time, back off "
            "with jitter",
            ("unbounded retries", "retries", "retry"),
        ),
    )
}

# What each rule's guideline is about, in the words a guideline would use (retrieval query).
_TOPICS: dict[str, str] = {
    "mutable-default": "mutable default arguments",
    "bare-except": "bare except and swallowed errors",
    "swallowed-exception": "bare except and swallowed errors",
    "sql-injection": "SQL injection via f-strings, parameterised queries",
    "hard-coded-secret": "secrets in code",
    "open-without-with": "resource leaks, files closed with a context manager",
    "naive-datetime": "timezone-naive datetimes",
    "eval-exec": "security and data safety, user input",
    "unbounded-retry": "unbounded retries",
}

_SQL = re.compile(
    r"\b(select\b.*\bfrom|insert\s+into|update\b.*\bset|delete\s+from|drop\s+table|"
    r"create\s+table|alter\s+table)\b",
    re.IGNORECASE | re.DOTALL,
)
_SECRET_NAME = re.compile(
    r"(api_?key|secret|passw(or)?d|passwd|token|access_?key|private_?key|auth)",
    re.IGNORECASE,
)
# Names that hold the *name* of a secret (an env var, a header), not the secret itself.
_SECRET_NAME_EXCLUDED = re.compile(
    r"_(env|var|name|field|path|file|url|header|prefix|type|key_id|len|length)$", re.IGNORECASE
)
_EXECUTE = frozenset({"execute", "executemany", "executescript", "raw", "mogrify"})
_MUTABLE_CALLS = frozenset({"list", "dict", "set", "defaultdict", "OrderedDict"})


def static_findings(change: FileChange) -> list[Finding]:
    """Deterministic checks of the lines ``change`` adds (ast where a hunk parses)."""
    found: list[tuple[int, str]] = []
    for hunk in change.hunks:
        if not hunk.added:
            continue
        if not change.is_python:
            found += _secret_lines(hunk.added)
            continue
        hits = _ast_hunk(hunk)
        found += hits if hits is not None else _regex_hunk(hunk.added)
    unique = sorted(set(found))
    return [
        Finding(change.path, line, RULES[rule].severity, RULES[rule].message, rule)
        for line, rule in unique
    ]


def _ast_hunk(hunk: Hunk) -> list[tuple[int, str]] | None:
    """Rule hits on added lines, or None when the hunk is not parseable Python."""
    text = "\n".join(t for _, t, _ in hunk.lines) + "\n"
    tree = None
    for candidate in (text, textwrap.dedent(text)):
        try:
            tree = ast.parse(candidate)
            break
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
    if tree is None:
        return None
    numbers = [n for n, _, _ in hunk.lines]
    added = {n for n, _, a in hunk.lines if a}
    checker = _Checker.run(tree)
    hits = [(numbers[i - 1], rule) for i, rule in checker.hits if 0 < i <= len(numbers)]
    for built, called in checker.sql_pairs:
        # One finding per query: where it was built if that line is new, else at the call.
        lines = [numbers[i - 1] for i in (built, called) if 0 < i <= len(numbers)]
        hits += [(n, "sql-injection") for n in [n for n in lines if n in added][:1]]
    return [(n, rule) for n, rule in hits if n in added]


class _Checker(ast.NodeVisitor):
    """Collects ``(line, rule)`` for the rules of :data:`RULES` in one parsed tree."""

    def __init__(self) -> None:
        self.hits: list[tuple[int, str]] = []
        self.sql_pairs: list[tuple[int, int]] = []  # (line built, line executed)
        self._with_items: set[int] = set()
        self._sql_names: dict[str, int] = {}

    @classmethod
    def run(cls, tree: ast.AST) -> _Checker:
        checker = cls()
        checker.visit(tree)
        return checker

    def _hit(self, node: ast.AST, rule: str) -> None:
        self.hits.append((getattr(node, "lineno", 0), rule))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
            if _is_mutable(default):
                self._hit(default, "mutable-default")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            self._hit(node, "bare-except")
        elif _names_exception(node.type) and _only_pass(node.body):
            self._hit(node, "swallowed-exception")
        self.generic_visit(node)

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        self._with_items.update(id(item.context_expr) for item in node.items)
        self.generic_visit(node)

    visit_AsyncWith = visit_With

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_assignment(target, node.value, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._check_assignment(node.target, node.value, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        if name in ("eval", "exec") and isinstance(node.func, ast.Name):
            self._hit(node, "eval-exec")
        elif name == "open" and isinstance(node.func, ast.Name):
            if id(node) not in self._with_items:
                self._hit(node, "open-without-with")
        elif name in _EXECUTE and node.args:
            self._check_execute(node)
        elif _is_naive_now(node):
            self._hit(node, "naive-datetime")
        for kw in node.keywords:
            if kw.arg and _is_secret(kw.arg, kw.value):
                self._hit(kw.value, "hard-coded-secret")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if isinstance(node.test, ast.Constant) and node.test.value in (True, 1):
            if any(_retries_forever(t) for t in _walk_loop(node.body) if isinstance(t, ast.Try)):
                self._hit(node, "unbounded-retry")
        self.generic_visit(node)

    def _check_assignment(self, target: ast.expr, value: ast.expr, node: ast.stmt) -> None:
        name = target.id if isinstance(target, ast.Name) else _attr_tail(target)
        if name and _is_secret(name, value):
            self._hit(node, "hard-coded-secret")
        if isinstance(target, ast.Name) and _is_formatted_sql(value):
            self._sql_names[target.id] = node.lineno

    def _check_execute(self, node: ast.Call) -> None:
        query = node.args[0]
        if _is_formatted_sql(query):
            self._hit(node, "sql-injection")
        elif isinstance(query, ast.Name) and query.id in self._sql_names:
            self.sql_pairs.append((self._sql_names[query.id], node.lineno))


def _is_mutable(node: ast.expr) -> bool:
    if isinstance(node, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp):
        return True
    return isinstance(node, ast.Call) and _call_name(node) in _MUTABLE_CALLS


def _names_exception(node: ast.expr) -> bool:
    names = node.elts if isinstance(node, ast.Tuple) else [node]
    return any(isinstance(n, ast.Name) and n.id in ("Exception", "BaseException") for n in names)


def _only_pass(body: list[ast.stmt]) -> bool:
    return all(
        isinstance(s, ast.Pass | ast.Continue)
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in body
    )


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _attr_tail(node: ast.expr) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else None


def _is_naive_now(node: ast.Call) -> bool:
    func = node.func
    if not isinstance(func, ast.Attribute):
        return False
    owner = func.value
    on_datetime = (isinstance(owner, ast.Name) and owner.id == "datetime") or (
        isinstance(owner, ast.Attribute) and owner.attr == "datetime"
    )
    if not on_datetime:
        return False
    return func.attr == "utcnow" or (func.attr == "now" and not node.args and not node.keywords)


def _is_secret(name: str, value: ast.expr) -> bool:
    if not _SECRET_NAME.search(name) or _SECRET_NAME_EXCLUDED.search(name):
        return False
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        return False
    return _looks_like_secret_value(value.value)


def _looks_like_secret_value(value: str) -> bool:
    v = value.strip()
    if len(v) < 4 or v.startswith(("${", "<", "{")) or set(v) <= set("*xX."):
        return False
    return not re.fullmatch(r"[A-Z][A-Z0-9_]+", v)  # an env var's name, not its value


def _is_formatted_sql(node: ast.expr) -> bool:
    """An f-string, ``%``, ``+`` or ``.format()`` building text that reads as SQL."""
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
        has_field = any(isinstance(v, ast.FormattedValue) for v in node.values)
        return has_field and bool(_SQL.search(" x ".join(str(p) for p in parts)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return any(_SQL.search(s) for s in _str_constants(node))
    if isinstance(node, ast.Call) and _call_name(node) == "format":
        owner = node.func.value if isinstance(node.func, ast.Attribute) else None
        return owner is not None and any(_SQL.search(s) for s in _str_constants(owner))
    return False


def _str_constants(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value
        elif isinstance(sub, ast.JoinedStr):
            yield " x ".join(str(v.value) for v in sub.values if isinstance(v, ast.Constant))


def _walk_loop(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Nodes of a loop body, not descending into nested functions, classes or loops."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.While | ast.For | ast.AsyncFor):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _retries_forever(node: ast.Try) -> bool:
    """Every handler swallows the error and lets the loop go round again."""
    exits = (ast.Raise, ast.Break, ast.Return)
    return bool(node.handlers) and not any(
        isinstance(sub, exits) for h in node.handlers for sub in _walk_loop(h.body)
    )


# Fallbacks for hunks that do not parse on their own (they start or end mid-block).
_RX_MUTABLE = re.compile(
    r"^\s*(async\s+)?def\s+\w+\s*\(.*?\w+\s*(:[^=,()]+)?=\s*"
    r"(\[\s*\]|\{\s*\}|(list|dict|set)\(\s*\))"
)
_RX_BARE = re.compile(r"^\s*except\s*:")
_RX_BROAD = re.compile(r"^\s*except\s*\(?\s*(Base)?Exception\b[^:]*:\s*(pass)?\s*(#.*)?$")
_RX_SQL_BUILD = re.compile(r"""(\bf["'].*\{|["']\s*%\s*[\w(]|["']\s*\+\s*\w|["']\s*\.format\()""")
_RX_EXECUTE = re.compile(r"\.(execute|executemany|executescript|raw)\s*\(")
_RX_SECRET = re.compile(
    r"""\b([A-Za-z_][\w.]*)\s*(?::\s*[\w\[\], |]+)?[:=]\s*[rbuRBU]?(["'])([^"'\n]+)\2"""
)
_RX_OPEN = re.compile(r"(?<![\w.])open\s*\(")
_RX_WITH = re.compile(r"^\s*(async\s+)?with\b")
_RX_NAIVE = re.compile(r"\bdatetime\.(utcnow\s*\(|now\s*\(\s*\))")
_RX_EVAL = re.compile(r"(?<![\w.])(eval|exec)\s*\(")
_RX_WHILE_TRUE = re.compile(r"^\s*while\s+(True|1)\s*:")


# Longer lines (minified or generated code) are not regex-checked: see _regex_hunk.
_MAX_REGEX_LINE = 2000


def _regex_hunk(added: list[tuple[int, str]]) -> list[tuple[int, str]]:
    hits: list[tuple[int, str]] = []
    has_execute = any(_RX_EXECUTE.search(t) for _, t in added)
    for i, (n, text) in enumerate(added):
        if len(text) > _MAX_REGEX_LINE:  # the patterns backtrack: a huge line would stall
            continue
        code = text.split("#", 1)[0] if "#" in text and '"' not in text else text
        nxt = added[i + 1][1].strip() if i + 1 < len(added) else ""
        if _RX_MUTABLE.search(code):
            hits.append((n, "mutable-default"))
        if _RX_BARE.search(code):
            hits.append((n, "bare-except"))
        elif (m := _RX_BROAD.search(code)) and (m.group(2) or nxt == "pass"):
            hits.append((n, "swallowed-exception"))
        if has_execute and _SQL.search(code) and _RX_SQL_BUILD.search(code):
            hits.append((n, "sql-injection"))
        if _RX_OPEN.search(code) and not _RX_WITH.search(code):
            hits.append((n, "open-without-with"))
        if _RX_NAIVE.search(code):
            hits.append((n, "naive-datetime"))
        if _RX_EVAL.search(code):
            hits.append((n, "eval-exec"))
        if _RX_WHILE_TRUE.search(code) and _regex_retry_forever(added[i + 1 : i + 12]):
            hits.append((n, "unbounded-retry"))
    return hits + _secret_lines(added)


def _regex_retry_forever(following: list[tuple[int, str]]) -> bool:
    texts = [t.strip() for _, t in following]
    has_try = any(t.startswith("try:") for t in texts)
    exits = any(re.match(r"(raise|break)\b", t) for t in texts)
    return has_try and not exits


def _secret_lines(added: list[tuple[int, str]]) -> list[tuple[int, str]]:
    hits = []
    for n, text in added:
        for m in _RX_SECRET.finditer(text):
            name = m.group(1).rsplit(".", 1)[-1]
            if (
                _SECRET_NAME.search(name)
                and not _SECRET_NAME_EXCLUDED.search(name)
                and _looks_like_secret_value(m.group(3))
            ):
                hits.append((n, "hard-coded-secret"))
                break
    return hits


# -- guidelines, model findings, merging ---------------------------------------------------------


def review_query(changes: Sequence[FileChange], text: str, static: Sequence[Finding]) -> str:
    """The review question: the rules the checks flagged (so their guidelines are
    retrieved), the answer format, then the change itself."""
    names = ", ".join(c.path for c in changes)
    flagged = sorted({RULES[f.rule].message.split(";")[0] for f in static})
    head = (
        f"Review this change to {names} against the guidelines. Report each finding on its "
        "own line as `file:line: severity: message`, severity one of info, minor, major, "
        "critical, with the line number in the new file."
    )
    if flagged:
        head += " Static checks already flagged: " + "; ".join(flagged) + "."
    return f"{head}\n\n{text.strip()}"


def guideline_queries(static: Sequence[Finding]) -> dict[str, str]:
    """One retrieval query per rule the checks flagged: the topic of its guideline."""
    rules = sorted({f.rule for f in static if f.rule in _TOPICS})
    return {rule: f"Code review guideline: {_TOPICS[rule]}" for rule in rules}


def cite_guidelines(
    findings: Iterable[Finding],
    by_rule: Mapping[str, Sequence[tuple[str, str, str]]],
    general: Sequence[tuple[str, str, str]] = (),
) -> list[Finding]:
    """Attach to each finding the first retrieved guideline whose heading (else text)
    names its rule: from the chunks retrieved for that rule, else from ``general``.
    Contexts are ``(source, heading, text)``."""
    out = []
    for f in findings:
        rule = RULES.get(f.rule)
        contexts = [*by_rule.get(f.rule, ()), *general]
        match = _guideline_for(rule, contexts) if rule else None
        out.append(_replace(f, guideline=match) if match else f)
    return out


def _guideline_for(rule: Rule, contexts: Sequence[tuple[str, str, str]]) -> str | None:
    for term in rule.guideline_terms:
        for where in (1, 2):  # headings first: a passing mention in a text is weaker
            for ctx in contexts:
                if term in ctx[where].lower():
                    return f"{ctx[0]} — {ctx[1]}" if ctx[1] else ctx[0]
    return None


def _replace(f: Finding, **changes: Any) -> Finding:
    data = {name: getattr(f, name) for name in Finding.__dataclass_fields__}
    data.update(changes)
    return Finding(**data)


_MODEL_LINE = re.compile(
    r"^\s*(?:[-*•]\s*|\d+[.)]\s*)?[`*]*(?P<file>[^\s:`*]+?)[`*]*:(?P<line>\d+)(?:[-:]\d+)?"
    r"[`*]*\s*[:\-–]?\s*[\[(*]*(?P<sev>\w+)[\])*]*\s*[:\-–]\s*(?P<msg>.+?)\s*$"
)
_MODEL_LINE_NO_FILE = re.compile(
    r"^\s*(?:[-*•]\s*)?[`*]*line\s+(?P<line>\d+)[`*]*\s*[:\-–,]\s*[\[(*]*(?P<sev>\w+)[\])*]*"
    r"\s*[:\-–]\s*(?P<msg>.+?)\s*$",
    re.IGNORECASE,
)
_SEVERITY_WORDS: dict[str, Severity] = {
    "info": "info",
    "nit": "info",
    "note": "info",
    "suggestion": "info",
    "minor": "minor",
    "low": "minor",
    "warning": "minor",
    "medium": "minor",
    "major": "major",
    "high": "major",
    "error": "major",
    "critical": "critical",
    "blocker": "critical",
    "severe": "critical",
}
_RULE_WORDS: tuple[tuple[str, str], ...] = (
    ("mutable default", "mutable-default"),
    ("bare except", "bare-except"),
    ("except:", "bare-except"),
    ("sql", "sql-injection"),
    ("secret", "hard-coded-secret"),
    ("password", "hard-coded-secret"),
    ("api key", "hard-coded-secret"),
    ("timezone", "naive-datetime"),
    ("utcnow", "naive-datetime"),
    ("eval", "eval-exec"),
    ("retry", "unbounded-retry"),
    ("retries", "unbounded-retry"),
    ("context manager", "open-without-with"),
    ("swallow", "swallowed-exception"),
)


def parse_model_findings(text: str, files: Sequence[str]) -> list[Finding]:
    """Findings in a model's reply (``file:line: severity: message``), read leniently.

    A file name is matched to the reviewed files by suffix; a line without a file counts
    for the only file reviewed; lines naming no known severity or file are skipped.
    """
    out = []
    for raw in text.splitlines():
        m = _MODEL_LINE.match(raw) or _MODEL_LINE_NO_FILE.match(raw)
        if m is None:
            continue
        severity = _SEVERITY_WORDS.get(m.group("sev").lower())
        named = m.groupdict().get("file")
        path = _known_file(named, files) if named else (files[0] if len(files) == 1 else None)
        if severity is None or path is None:
            continue
        message = m.group("msg").strip().strip("*` ")
        out.append(
            Finding(path, int(m.group("line")), severity, message, _rule_of(message), "model")
        )
    return out


def _known_file(name: str, files: Sequence[str]) -> str | None:
    name = name.removeprefix("b/").removeprefix("./")
    for path in files:
        if path == name or path.endswith("/" + name) or name.endswith("/" + path):
            return path
    return files[0] if len(files) == 1 and name in ("<source>", "file") else None


def _rule_of(message: str) -> str:
    lower = message.lower()
    return next((rule for word, rule in _RULE_WORDS if word in lower), "model")


def merge_findings(static: Sequence[Finding], model: Sequence[Finding]) -> list[Finding]:
    """Static findings plus the model's, one per (file, line, rule), sorted by file and line."""
    merged: dict[tuple[str, int, str], Finding] = {}
    for f in [*static, *model]:
        merged.setdefault((f.file, f.line, f.rule), f)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(merged.values(), key=lambda f: (f.file, f.line, -rank[f.severity], f.rule))
