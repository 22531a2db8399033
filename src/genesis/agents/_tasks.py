"""What the non-answer agents return, and the pure logic behind their tasks.

Results are dataclasses with ``as_dict()``; every one says which ``agent`` produced it,
whether a model ``generated`` it, and carries a ``note`` when the offline path was taken.
The functions here do no I/O: extracting code from a model's reply, building the prompts,
parsing a plan and turning retrieved template chunks into a plan skeleton (code review lives
in ``_review``). :class:`genesis.agents.Agent` wires them to the token-cached pipeline and the
sandbox.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from genesis.agents._darwin import EvolutionResult, ScoredVariant
from genesis.agents._sandbox import SandboxResult
from genesis.llm._extractive import select_sentences
from genesis.rag import RAGAnswer, Source

Severity = Literal["info", "minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "minor", "major", "critical")

NEEDS_MODEL_PLAN = (
    "No LLM is configured: this is the section skeleton of the retrieved templates, each "
    "filled with the best matching sentences. A model is needed to write the plan itself."
)
NEEDS_MODEL_TESTS = (
    "No LLM is configured: test generation needs a model. The sources are the retrieved "
    "test templates and conventions to write them by hand."
)
NEEDS_MODEL_REVIEW = (
    "No LLM is configured: these findings come from deterministic checks only; a model "
    "would add findings the checks cannot see."
)
NEEDS_MODEL_EVOLVE = (
    "No LLM is configured: generation needs a model. The original was scored once in the "
    "sandbox; no variants were made."
)
EXTRACTIVE_ANSWER = "No LLM is configured: the answer is quoted from the retrieved sources."

_OUTPUT_TAIL_CHARS = 2000
_MIN_SKELETON_SENTENCES = 2


# -- requests --------------------------------------------------------------------------------

TaskName = Literal["answer", "plan", "tests", "review", "evolve"]


class _Request(BaseModel):
    """One task's typed input. ``INPUT`` names the field that holds the main text (a
    question, a brief, source code or a diff); the other fields are the task's options."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    INPUT: ClassVar[str]

    @classmethod
    def options(cls) -> list[str]:
        return [name for name in cls.model_fields if name not in ("task", cls.INPUT)]


class AnswerRequest(_Request):
    """Answer a question from the agent's collection (or ``collection``)."""

    INPUT: ClassVar[str] = "question"
    task: Literal["answer"] = "answer"
    question: str
    top_k: int | None = Field(None, ge=1, le=100)
    collection: str | None = None


class PlanRequest(_Request):
    """Write a structured plan for a business brief."""

    INPUT: ClassVar[str] = "brief"
    task: Literal["plan"] = "plan"
    brief: str


class TestsRequest(_Request):
    """Write pytest tests for ``source``, imported as ``module_name``."""

    __test__ = False  # not a pytest test class, whatever its name says
    INPUT: ClassVar[str] = "source"
    task: Literal["tests"] = "tests"
    source: str
    module_name: str = "candidate"


class ReviewRequest(_Request):
    """Review a unified diff, or a whole source file named ``filename``."""

    INPUT: ClassVar[str] = "diff_or_source"
    task: Literal["review"] = "review"
    diff_or_source: str
    filename: str | None = None


class EvolveRequest(_Request):
    """Evolve ``source`` against ``tests`` with SE-Darwin."""

    INPUT: ClassVar[str] = "source"
    task: Literal["evolve"] = "evolve"
    source: str
    tests: str
    generations: int | None = Field(None, ge=1, le=20)
    population: int | None = Field(None, ge=1, le=20)


TaskRequest = Annotated[
    AnswerRequest | PlanRequest | TestsRequest | ReviewRequest | EvolveRequest,
    Field(discriminator="task"),
]
_REQUEST_ADAPTER: TypeAdapter[TaskRequest] = TypeAdapter(TaskRequest)
REQUEST_TYPES: dict[TaskName, type[_Request]] = {
    "answer": AnswerRequest,
    "plan": PlanRequest,
    "tests": TestsRequest,
    "review": ReviewRequest,
    "evolve": EvolveRequest,
}


def task_request(task: TaskName, task_input: str, options: Mapping[str, object]) -> TaskRequest:
    """The typed request of ``task`` from a text and loose options (a CLI's or a form's).

    Raises ValueError naming an option the task does not take, a missing one, or one of the
    wrong type, with the options the task does take.
    """
    kind = REQUEST_TYPES[task]
    allowed = kind.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"it takes: {', '.join(allowed)}" if allowed else "it takes no options"
        raise ValueError(f"task {task!r} takes no option {', '.join(map(repr, unknown))} ({takes})")
    try:
        return _REQUEST_ADAPTER.validate_python({"task": task, kind.INPUT: task_input, **options})
    except ValidationError as exc:
        raise ValueError(f"task {task!r}: {_validation_message(exc)}") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        # loc is (task tag, field): the tag says which request model was chosen.
        name = ".".join(str(part) for part in error["loc"][1:]) or "input"
        verb = "is required" if error["type"] == "missing" else f"is invalid: {error['msg']}"
        parts.append(f"option {name!r} {verb}")
    return "; ".join(parts)


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class AnswerResult:
    """An ``answer`` agent's result in the shape :meth:`Agent.run` gives every task."""

    agent: str
    answer: RAGAnswer
    generated: bool
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PlanSection:
    title: str
    body: str
    source: str | None = None  # the template chunk a skeleton section came from


@dataclass(slots=True)
class PlanResult:
    agent: str
    sections: list[PlanSection]
    sources: list[Source]
    generated: bool
    model: str
    note: str | None = None
    text: str = ""  # the model's reply as written; "" offline
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TestsResult:
    """Generated tests and what the sandbox made of them (``ran`` False: not run)."""

    __test__ = False  # not a pytest test class, whatever its name says

    agent: str
    code: str | None
    sources: list[Source]
    generated: bool
    model: str
    module_name: str
    ran: bool = False
    passed: int = 0
    failed: int = 0
    errors: int = 0
    total: int = 0
    killed_reason: str | None = None
    output: str = ""
    note: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Finding:
    """One review finding; ``line`` is a line of the NEW file (1-based)."""

    file: str
    line: int
    severity: Severity
    message: str
    rule: str
    origin: Literal["static", "model"] = "static"
    guideline: str | None = None  # "source — heading" of the guideline chunk it cites


@dataclass(slots=True)
class ReviewResult:
    agent: str
    findings: list[Finding]
    files: list[str]
    sources: list[Source]
    generated: bool
    model: str
    note: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Findings per severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["counts"] = self.counts
        return out


@dataclass(frozen=True, slots=True)
class VariantSummary:
    generation: int
    index: int
    outcome: str
    score: float
    runtime_s: float
    passed: int
    total: int
    killed_reason: str | None

    @classmethod
    def of(cls, v: ScoredVariant) -> VariantSummary:
        r = v.result
        return cls(
            v.generation,
            v.index,
            v.outcome,
            v.score,
            round(v.runtime_s, 6),
            r.passed,
            r.total,
            r.killed_reason,
        )


@dataclass(slots=True)
class EvolutionReport:
    """SE-Darwin's result through an agent; ``evolution`` is the loop's full record."""

    agent: str
    generated: bool
    model: str
    improved: bool
    best_source: str
    best: VariantSummary
    original: VariantSummary
    history: list[list[VariantSummary]]  # per generation, 0 being the original
    stopped_reason: str
    sources: list[Source]
    evolution: EvolutionResult
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Everything but ``evolution`` (whose sandbox outputs are large)."""
        return {
            f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "evolution"
        }


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


TaskResult = AnswerResult | PlanResult | TestsResult | ReviewResult | EvolutionReport


# -- code in model replies ---------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_python(reply: str) -> str | None:
    """The Python code in a model's reply, or None when it holds none that parses.

    Fenced blocks tagged python (or untagged) come first, the longest that parses wins;
    a reply without fences counts when it parses as a whole.
    """
    blocks = [
        (lang.lower(), body)
        for lang, body in _FENCE.findall(reply)
        if lang.lower() in ("", "python", "py", "python3")
    ]
    candidates = [body for _, body in blocks] if blocks else [reply]
    parsed = [c.strip("\n") + "\n" for c in candidates if c.strip() and _parses(c)]
    return max(parsed, key=len) if parsed else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def check_python(code: str, what: str) -> str:
    """``code`` if it is non-empty Python, else a ValueError naming ``what`` and the problem."""
    if not code.strip():
        raise ValueError(f"{what} must not be empty")
    try:
        ast.parse(code)
    except SyntaxError as exc:
        raise ValueError(f"{what} must be valid Python: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. a NUL byte
        raise ValueError(f"{what} must be valid Python: {exc}") from None
    except (MemoryError, RecursionError):
        raise ValueError(f"{what} is nested too deeply for the Python parser") from None
    return code


def output_tail(output: str, limit: int = _OUTPUT_TAIL_CHARS) -> str:
    return output if len(output) <= limit else "..." + output[-limit:]


def tests_query(source: str, module_name: str) -> str:
    return (
        f"Write pytest tests for the Python module `{module_name}` below. Import what you "
        f"test with `from {module_name} import ...`. Cover normal cases, edge cases and "
        f"errors. Reply with one ```python code block.\n\n```python\n{source.rstrip()}\n```"
    )


def evolve_query(best: str, tests: str, ranked: Sequence[ScoredVariant]) -> str:
    """The question for one SE-Darwin proposal: the best source, its tests and its results."""
    leader = next((v for v in ranked if v.source == best), ranked[0] if ranked else None)
    status = "not run yet" if leader is None else leader.outcome
    parts = [
        "Propose a complete new version of this Python module that passes all of its tests "
        "and runs faster. Reply with one ```python code block holding the whole module.",
        f"Current best version ({status}):\n```python\n{best.rstrip()}\n```",
        f"Its tests:\n```python\n{tests.rstrip()}\n```",
    ]
    if leader is not None and not leader.result.all_passed:
        parts.append(f"Test output of the current best:\n{output_tail(leader.result.output, 1200)}")
    tried = [v for v in ranked if v.source != best][:3]
    if tried:
        parts.append("Other versions tried: " + "; ".join(v.outcome for v in tried))
    return "\n\n".join(parts)


def sandbox_counts(result: SandboxResult) -> dict[str, Any]:
    return {
        "ran": True,
        "passed": result.passed,
        "failed": result.failed,
        "errors": result.errors,
        "total": result.total,
        "killed_reason": result.killed_reason,
        "output": output_tail(result.output),
    }


# -- plans ------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^\s{0,3}(#{1,4})\s+(.+?)\s*#*\s*$")
_BOLD_HEADING = re.compile(r"^\s*(?:\d+[.)]\s*)?\*\*(.+?)\*\*:?\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+)$")


def plan_query(brief: str) -> str:
    return (
        f"{brief.strip()}\n\nWrite the plan in Markdown: one '## ' heading per section the "
        "template asks for, each followed by its content for this business."
    )


def parse_plan(text: str) -> list[PlanSection]:
    """Ordered sections of a model's plan: JSON, Markdown headings or bold lines; else one."""
    for parse in (_json_sections, _heading_sections):
        sections = parse(text)
        if sections:
            return sections
    body = text.strip()
    return [PlanSection("Plan", body)] if body else []


def _json_sections(text: str) -> list[PlanSection]:
    match = re.search(r"[\[{].*[\]}]", text, re.DOTALL)
    if match is None:
        return []
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return []
    if isinstance(data, dict) and isinstance(data.get("sections"), list):
        data = data["sections"]
    if isinstance(data, dict):
        return [PlanSection(str(k), _as_text(v)) for k, v in data.items()]
    if isinstance(data, list):
        return [s for item in data if (s := _json_section(item)) is not None]
    return []


def _json_section(item: Any) -> PlanSection | None:
    if not isinstance(item, dict):
        return None
    title = item.get("title") or item.get("heading") or item.get("name")
    body = item.get("body") or item.get("content") or item.get("text") or ""
    return PlanSection(str(title), _as_text(body)) if title else None


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"- {_as_text(v)}" for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_as_text(v)}" for k, v in value.items())
    return str(value).strip()


def _heading_sections(text: str) -> list[PlanSection]:
    lines = text.splitlines()
    marks = [(i, m) for i, line in enumerate(lines) if (m := _heading_of(line))]
    if not marks:
        return []
    # A lone top heading over several section headings is the plan's title, not a section.
    levels = [level for _, (level, _) in marks]
    if len(marks) > 1 and levels[0] < min(levels[1:]):
        marks = marks[1:]
    ends = [i for i, _ in marks[1:]] + [len(lines)]
    return [
        PlanSection(title, "\n".join(lines[i + 1 : end]).strip())
        for (i, (_, title)), end in zip(marks, ends, strict=True)
    ]


def _heading_of(line: str) -> tuple[int, str] | None:
    md = _MD_HEADING.match(line)
    if md:
        return len(md.group(1)), md.group(2).strip("* ")
    bold = _BOLD_HEADING.match(line)
    return (9, bold.group(1).strip()) if bold else None


def plan_skeleton(brief: str, contexts: Sequence[tuple[str, str, str]]) -> list[PlanSection]:
    """Offline plan: one section per retrieved template chunk ``(source, heading, text)``,
    in prompt order, titled by its heading, filled with its bullet items and the sentences
    that best match the brief and the section.

    A document's introduction (a chunk under its title alone) is not a section of the
    template; it is used only when nothing else was retrieved.
    """
    sections = [c for c in contexts if " > " in c[1]] or list(contexts)
    out: list[PlanSection] = []
    seen: set[str] = set()
    for source, heading, text in sections:
        title = heading.rsplit(" > ", 1)[-1].strip() or PurePosixPath(source).stem
        if title.lower() not in seen:
            seen.add(title.lower())
            out.append(PlanSection(title, _skeleton_body(brief, title, text), source))
    return out


def _skeleton_body(brief: str, title: str, text: str) -> str:
    prose = "\n".join(line for line in text.splitlines() if not _MD_HEADING.match(line))
    bullets = [m.group(1).strip() for line in prose.splitlines() if (m := _BULLET.match(line))]
    chosen = [s.text for s in select_sentences(f"{brief} {title}", [prose])]
    if len(chosen) < _MIN_SKELETON_SENTENCES:
        # Too little overlap with the brief: the section's own opening explains what to write.
        opening = [s.text for s in select_sentences(title, [prose])]
        chosen += [s for s in opening if s not in chosen][: _MIN_SKELETON_SENTENCES - len(chosen)]
    lines = [f"- {b}" for b in bullets]
    lines += [s for s in chosen if not any(s in b for b in bullets)]
    return "\n".join(lines)
