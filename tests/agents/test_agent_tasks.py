"""The agents' tasks on real parts: MiniLM retrieval over the demo knowledge base, the token
cache, prompts in token space, the offline extractive backend or a real HTTP server with
scripted replies, and the real sandbox."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genesis.agents import (
    Agent,
    AnswerRequest,
    AnswerResult,
    EvolutionReport,
    EvolveRequest,
    PlanRequest,
    PlanResult,
    ReviewRequest,
    ReviewResult,
    SandboxLimits,
    TestsRequest,
    TestsResult,
)
from genesis.agents._review import parse_model_findings, parse_review_input, static_findings
from genesis.agents._tasks import extract_python, parse_plan, task_request
from genesis.cache import MemoryTokenStore, TokenCache
from genesis.config import AgentProfile, load_settings
from genesis.errors import AgentError
from genesis.knowledge import KnowledgeBase, MiniLMEmbedder
from genesis.llm import CompletionsBackend, ExtractiveBackend
from genesis.rag import PromptAssembler, PromptTemplate, TokenCachedRAG
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer, SegmentEncoder

DEMO_KB = Path(__file__).resolve().parents[2] / "src" / "genesis" / "demo_kb"
COLLECTIONS = ("business_generation", "qa", "code_review", "se_darwin")
PROFILES: dict[str, AgentProfile] = load_settings("dev", environ={}).agents
MODELS = sorted({p.models.finetuned or p.models.baseline for p in PROFILES.values()})
# Short limits keep the module fast; a looping candidate is killed after this long.
LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=256)

MakeAgent = Callable[..., Awaitable[Agent]]

SLUGIFY = textwrap.dedent(
    '''
    import re


    def slugify(text: str) -> str:
        """Lower-case words of ``text`` joined by hyphens; ValueError when there are none."""
        words = re.findall(r"[a-z0-9]+", text.lower())
        if not words:
            raise ValueError("nothing to slugify")
        return "-".join(words)
    '''
)
PASSING_TESTS = textwrap.dedent(
    """
    import pytest

    from candidate import slugify


    def test_words_are_joined_by_hyphens():
        assert slugify("Hello World") == "hello-world"


    def test_punctuation_is_dropped():
        assert slugify("Rock & Roll, 2024!") == "rock-roll-2024"


    def test_text_without_words_is_refused():
        with pytest.raises(ValueError):
            slugify("!!!")
    """
)
FAILING_TESTS = PASSING_TESTS.replace('"hello-world"', '"Hello-World"')

REVIEW_DIFF = """\
diff --git a/ledger/invoices.py b/ledger/invoices.py
index 3f2a1c9..8b7d0e4 100644
--- a/ledger/invoices.py
+++ b/ledger/invoices.py
@@ -40,7 +40,20 @@ class InvoiceRepository:
     def __init__(self, conn):
         self.conn = conn

-    def find(self, customer):
-        return self.conn.execute("SELECT * FROM invoices WHERE customer = ?", (customer,))
+    def find(self, customer, statuses=[]):
+        cursor = self.conn.cursor()
+        query = f"SELECT * FROM invoices WHERE customer = '{customer}'"
+        cursor.execute(query)
+        return cursor.fetchall()
+
+    def export(self, path):
+        try:
+            handle = open(path, "w")
+            handle.write(str(self.find("all")))
+        except:
+            pass
+        return datetime.utcnow()

     def count(self):
         return self.conn.execute("SELECT count(*) FROM invoices").fetchone()[0]
diff --git a/ledger/settings.py b/ledger/settings.py
new file mode 100644
index 0000000..1c2d3e4
--- /dev/null
+++ b/ledger/settings.py
@@ -0,0 +1,5 @@
+import os
+
+DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///ledger.db")
+STRIPE_API_KEY = "sk_live_51HxQeTzS9bF3kLmN"
+TOKEN_ENV = "LEDGER_TOKEN"
"""
# (file, NEW line, rule) the deterministic checks must report for REVIEW_DIFF.
EXPECTED_STATIC = {
    ("ledger/invoices.py", 43, "mutable-default"),
    ("ledger/invoices.py", 45, "sql-injection"),
    ("ledger/invoices.py", 51, "open-without-with"),
    ("ledger/invoices.py", 53, "bare-except"),
    ("ledger/invoices.py", 55, "naive-datetime"),
    ("ledger/settings.py", 4, "hard-coded-secret"),
}

FIB_TESTS = textwrap.dedent(
    """
    from candidate import fib


    def test_small_values():
        assert [fib(n) for n in range(8)] == [0, 1, 1, 2, 3, 5, 8, 13]


    def test_large_value():
        assert fib(40) == 102334155
    """
)
# Exponential: fib(40) takes minutes, far past the sandbox's limit.
SLOW_FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
LOOPING_FIB = "def fib(n):\n    while True:\n        n += 1\n"
FAST_FIB = (
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
)


def fenced(code: str, preface: str = "Here you go.") -> str:
    return f"{preface}\n\n```python\n{code.strip()}\n```\n\nThese cover the main cases."


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    model = MiniLMEmbedder()
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def mistral(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")


@pytest.fixture(scope="module")
def server(mistral: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(mistral, MODELS) as srv:
        yield srv


@pytest.fixture
async def kb(
    tmp_path_factory: pytest.TempPathFactory, embedder: MiniLMEmbedder
) -> AsyncIterator[KnowledgeBase]:
    # Module-wide folder: ingested once, re-ingesting unchanged files costs nothing.
    base = KnowledgeBase.embedded(tmp_path_factory.getbasetemp() / "agent-tasks-kb", embedder)
    for name in COLLECTIONS:
        await base.ingest(DEMO_KB / name, name)
    yield base
    await base.aclose()


@pytest.fixture
async def make_agent(kb: KnowledgeBase, mistral: HFTokenizer) -> AsyncIterator[MakeAgent]:
    caches: list[TokenCache] = []

    async def make(name: str, generate: Any, **kwargs: Any) -> Agent:
        profile = PROFILES[name]
        encoder = SegmentEncoder(mistral)
        cache = TokenCache(encoder, MemoryTokenStore())
        caches.append(cache)
        assembler = PromptAssembler(encoder, PromptTemplate(system=profile.system_prompt))
        await assembler.warm_up()
        rag = TokenCachedRAG(
            kb,
            cache,
            assembler,
            generate,
            max_context_tokens=4096,
            cache_ttl_s=profile.cache_ttl_s,
        )
        return Agent(profile, rag, timeout_s=10.0, sandbox_limits=LIMITS, **kwargs)

    yield make
    for cache in caches:
        await cache.aclose()


@pytest.fixture
async def llm(server: FakeOpenAIServer) -> AsyncIterator[CompletionsBackend]:
    server.reset()
    backend = CompletionsBackend(server.base_url)
    yield backend
    await backend.aclose()


def model_of(name: str) -> str:
    p = PROFILES[name]
    return p.models.finetuned or p.models.baseline


# -- pure parts (fast) ----------------------------------------------------------------------------


def test_code_is_extracted_from_fences_or_a_bare_reply() -> None:
    assert extract_python(fenced("x = 1")) == "x = 1\n"
    assert extract_python("def f():\n    return 2\n") == "def f():\n    return 2\n"
    assert extract_python("```js\nlet x = 1;\n```") is None
    assert extract_python("I cannot help with that.") is None


def test_plan_replies_are_parsed_from_markdown_json_or_bold_headings() -> None:
    md = "# Plan for a coffee cart\n\n## Problem\nCommuters wait.\n\n## Offer\nFast coffee.\n"
    assert [(s.title, s.body) for s in parse_plan(md)] == [
        ("Problem", "Commuters wait."),
        ("Offer", "Fast coffee."),
    ]
    js = 'Sure: {"sections": [{"title": "Market", "body": ["Offices", "Campus"]}]}'
    assert [(s.title, s.body) for s in parse_plan(js)] == [("Market", "- Offices\n- Campus")]
    bold = "**Pricing**\nThree dollars a cup.\n**Channels**\nInstagram."
    assert [s.title for s in parse_plan(bold)] == ["Pricing", "Channels"]
    assert [s.title for s in parse_plan("Just sell coffee.")] == ["Plan"]


def test_static_review_finds_the_documented_patterns_on_new_lines() -> None:
    changes = parse_review_input(REVIEW_DIFF, None)
    assert [c.path for c in changes] == ["ledger/invoices.py", "ledger/settings.py"]
    found = {(f.file, f.line, f.rule) for c in changes for f in static_findings(c)}
    assert found == EXPECTED_STATIC


def test_hunks_that_do_not_parse_are_checked_line_by_line() -> None:
    # The hunk ends inside the try block, so ast cannot parse it; the regex fallback works.
    diff = (
        "--- a/app.py\n+++ b/app.py\n@@ -9,2 +9,5 @@ def save(rows):\n"
        "     for row in rows:\n+        try:\n"
        '+            cur.execute("DELETE FROM t WHERE id=%s" % row)\n'
        "+        except:\n+            token = 'abcd1234secret'\n"
    )
    found = {(f.line, f.rule) for c in parse_review_input(diff, None) for f in static_findings(c)}
    assert found == {(11, "sql-injection"), (12, "bare-except"), (13, "hard-coded-secret")}


def test_a_whole_source_file_is_reviewed_under_its_filename() -> None:
    source = "import time\n\ndef poll(client):\n    while True:\n        try:\n"
    source += (
        "            return client.get()\n        except Exception:\n            time.sleep(1)\n"
    )
    (change,) = parse_review_input(source, "jobs/poll.py")
    assert [(f.file, f.line, f.rule) for f in static_findings(change)] == [
        ("jobs/poll.py", 4, "unbounded-retry")
    ]


def test_bad_review_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_review_input("  \n", None)
    only_removed = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,1 @@\n-import os\n import sys\n"
    with pytest.raises(ValueError, match="adds no lines"):
        parse_review_input(only_removed, None)


def test_model_findings_are_read_leniently() -> None:
    reply = textwrap.dedent(
        """
        Findings:
        - `ledger/invoices.py:45`: **critical**: SQL built from user input
        ledger/invoices.py:47 - high - export swallows every error
        invoices.py:43: major: Mutable default argument `statuses`
        other/unknown.py:3: major: not part of this change
        Overall the change needs work.
        """
    )
    found = parse_model_findings(reply, ["ledger/invoices.py", "ledger/settings.py"])
    assert [(f.line, f.severity, f.rule) for f in found] == [
        (45, "critical", "sql-injection"),
        (47, "major", "swallowed-exception"),
        (43, "major", "mutable-default"),
    ]
    assert all(f.file == "ledger/invoices.py" and f.origin == "model" for f in found)


# -- offline (extractive) ---------------------------------------------------------------------


@pytest.mark.slow
async def test_offline_plan_is_the_template_skeleton_and_says_a_model_is_needed(
    make_agent: MakeAgent,
) -> None:
    agent = await make_agent("business_generation", ExtractiveBackend().generate)
    brief = "A one-page business plan for a mobile coffee cart serving office parks"
    result = await agent.plan(brief)
    assert isinstance(result, PlanResult)
    assert not result.generated
    assert result.note is not None and "model is needed" in result.note
    assert result.agent == "business_generation"
    titles = [s.title for s in result.sections]
    assert "Market and competition" in titles or "Vision, problem and offer" in titles
    assert len(titles) == len(set(titles)) >= 2
    assert all(s.body and s.source for s in result.sections)
    template_sources = {s.source for s in result.sources}
    assert {s.source for s in result.sections} <= template_sources
    assert result.as_dict()["sections"][0]["title"] == titles[0]


@pytest.mark.slow
async def test_offline_tests_task_returns_templates_and_no_code(make_agent: MakeAgent) -> None:
    agent = await make_agent("qa", ExtractiveBackend().generate)
    result = await agent.write_tests(SLUGIFY)
    assert isinstance(result, TestsResult)
    assert result.code is None and not result.ran and not result.generated
    assert result.note is not None and "generation needs a model" in result.note
    assert result.sources and all(s.source.endswith(".md") for s in result.sources)


@pytest.mark.slow
async def test_offline_review_finds_the_patterns_and_cites_the_guidelines(
    make_agent: MakeAgent,
) -> None:
    agent = await make_agent("code_review", ExtractiveBackend().generate)
    result = await agent.review(REVIEW_DIFF)
    assert isinstance(result, ReviewResult)
    assert not result.generated and result.note is not None
    assert {(f.file, f.line, f.rule) for f in result.findings} == EXPECTED_STATIC
    by_rule = {f.rule: f for f in result.findings}
    assert by_rule["sql-injection"].severity == "critical"
    assert by_rule["hard-coded-secret"].severity == "critical"
    assert by_rule["bare-except"].severity == "major"
    # Each finding cites its own section of the bug-pattern guide, retrieved for its rule.
    for rule, heading in [
        ("mutable-default", "Mutable default arguments"),
        ("sql-injection", "SQL injection via f-strings"),
        ("hard-coded-secret", "Secrets in code"),
        ("bare-except", "Bare except and swallowed errors"),
        ("open-without-with", "Resource leaks"),
        ("naive-datetime", "Timezone-naive datetimes"),
    ]:
        assert (
            by_rule[rule].guideline
            == f"common-bug-patterns.md — Common Python bug patterns > {heading}"
        )
    cited = {f"{s.source} — {s.heading}" for s in result.sources}
    assert {f.guideline for f in result.findings} <= cited
    assert len({s.number for s in result.sources}) == len(result.sources)
    assert result.as_dict()["counts"]["critical"] == 2


@pytest.mark.slow
async def test_offline_evolution_scores_the_original_once_and_makes_no_variants(
    make_agent: MakeAgent,
) -> None:
    agent = await make_agent("se_darwin", ExtractiveBackend().generate)
    result = await agent.evolve(FAST_FIB, FIB_TESTS)
    assert isinstance(result, EvolutionReport)
    assert not result.generated and not result.improved
    assert result.note is not None and "generation needs a model" in result.note
    assert "generation needs a model" in result.stopped_reason
    assert [len(g) for g in result.history] == [1]
    assert result.original.outcome == "passed: 2/2 passed"
    assert result.best_source == FAST_FIB


@pytest.mark.slow
async def test_run_dispatches_on_the_typed_request(make_agent: MakeAgent) -> None:
    reviewer = await make_agent("code_review", ExtractiveBackend().generate)
    review = await reviewer.run(reviewer.request(REVIEW_DIFF))
    assert isinstance(review, ReviewResult) and review.agent == "code_review"
    darwin = await make_agent("se_darwin", ExtractiveBackend().generate)
    with pytest.raises(ValueError, match="agent 'se_darwin': task 'evolve': option 'tests'"):
        darwin.request(FAST_FIB)
    planner = await make_agent("business_generation", ExtractiveBackend().generate)
    plan = await planner.run(PlanRequest(brief="Plan a bike repair van business"))
    assert isinstance(plan, PlanResult) and plan.note
    qa = await make_agent("qa", ExtractiveBackend().generate)
    with pytest.raises(ValueError, match="the source to test must not be empty"):
        await qa.run(qa.request("   "))
    with pytest.raises(ValueError, match="the tests must be valid Python: line 1"):
        await darwin.evolve(FAST_FIB, "this is not python at all")


@pytest.mark.slow
async def test_run_refuses_another_tasks_request(make_agent: MakeAgent) -> None:
    reviewer = await make_agent("code_review", ExtractiveBackend().generate)
    with pytest.raises(AgentError, match="runs 'review' tasks, not 'plan'"):
        await reviewer.run(PlanRequest(brief="a bakery"))


def test_a_wrong_option_is_named_with_the_options_the_task_takes() -> None:
    with pytest.raises(ValueError) as caught:
        task_request("evolve", FAST_FIB, {"tests": FIB_TESTS, "filename": "x.py"})
    assert str(caught.value) == (
        "task 'evolve' takes no option 'filename' (it takes: tests, generations, population)"
    )
    with pytest.raises(ValueError, match="task 'plan' takes no option 'top_k' .it takes no opt"):
        task_request("plan", "a bakery", {"top_k": 3})


def test_a_missing_or_mistyped_option_is_named() -> None:
    with pytest.raises(ValueError, match="^task 'evolve': option 'tests' is required$"):
        task_request("evolve", FAST_FIB, {})
    with pytest.raises(ValueError, match="option 'generations' is invalid: .*integer"):
        task_request("evolve", FAST_FIB, {"tests": FIB_TESTS, "generations": "3"})
    with pytest.raises(ValueError, match="option 'top_k' is invalid: .*greater than or equal"):
        task_request("answer", "why?", {"top_k": 0})


def test_requests_carry_each_tasks_typed_parameters() -> None:
    evolve = task_request("evolve", FAST_FIB, {"tests": FIB_TESTS, "generations": 2})
    assert evolve == EvolveRequest(source=FAST_FIB, tests=FIB_TESTS, generations=2)
    review = task_request("review", "x = 1\n", {"filename": "a.py"})
    assert review == ReviewRequest(diff_or_source="x = 1\n", filename="a.py")
    assert task_request("tests", "x = 1\n", {}) == TestsRequest(source="x = 1\n")
    answer = task_request("answer", "why?", {"top_k": 3})
    assert answer == AnswerRequest(question="why?", top_k=3)


@pytest.mark.slow
async def test_answer_agents_run_returns_the_answer_with_agent_and_note(
    make_agent: MakeAgent,
) -> None:
    agent = await make_agent("qa", ExtractiveBackend().generate)
    profile = agent.profile.model_copy(update={"task": "answer"})
    answering = Agent(profile, agent.rag, timeout_s=10.0)
    result = await answering.run(answering.request("How should pytest fixtures be named?"))
    assert isinstance(result, AnswerResult)
    assert result.agent == "qa" and not result.generated and result.answer.extractive
    assert result.note is not None and "quoted" in result.note


# -- with a model (real HTTP server, scripted replies) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
async def test_model_plan_is_parsed_into_ordered_sections(
    make_agent: MakeAgent, llm: CompletionsBackend, server: FakeOpenAIServer
) -> None:
    reply = (
        "# Coffee cart plan\n\n## Vision, problem and offer\nFast coffee for office parks [1].\n\n"
        "## Market and competition\nThree parks, 4,000 workers [1].\n\n"
        "## Financial summary and milestones\nBreak even at 90 cups a day.\n"
    )
    server.script_replies(model_of("business_generation"), [reply])
    agent = await make_agent("business_generation", llm.generate)
    result = await agent.plan("A plan for a mobile coffee cart serving office parks")
    assert result.generated and result.note is None
    assert [s.title for s in result.sections] == [
        "Vision, problem and offer",
        "Market and competition",
        "Financial summary and milestones",
    ]
    assert result.sections[2].body == "Break even at 90 cups a day."
    (call,) = server.calls(model_of("business_generation"), "completions")
    assert "mobile coffee cart" in call["prompt"]


@pytest.mark.slow
@pytest.mark.integration
async def test_qa_runs_the_models_tests_in_the_sandbox_and_reports_the_outcome(
    make_agent: MakeAgent, llm: CompletionsBackend, server: FakeOpenAIServer
) -> None:
    server.script_replies(model_of("qa"), [fenced(PASSING_TESTS), fenced(FAILING_TESTS)])
    agent = await make_agent("qa", llm.generate)
    passing = await agent.write_tests(SLUGIFY)
    assert passing.generated and passing.ran
    assert passing.code is not None and "from candidate import slugify" in passing.code
    assert (passing.passed, passing.failed, passing.total) == (3, 0, 3)
    failing = await agent.write_tests(SLUGIFY)
    assert (failing.passed, failing.failed, failing.total) == (2, 1, 3)
    assert "Hello-World" in failing.output
    (first, _) = server.calls(model_of("qa"), "completions")
    assert "def slugify" in first["prompt"]


@pytest.mark.slow
@pytest.mark.integration
async def test_qa_reply_without_code_is_reported_not_run(
    make_agent: MakeAgent, llm: CompletionsBackend, server: FakeOpenAIServer
) -> None:
    server.script_replies(model_of("qa"), ["I would test the happy path and the errors."])
    agent = await make_agent("qa", llm.generate)
    result = await agent.write_tests(SLUGIFY)
    assert result.code is None and not result.ran
    assert result.note is not None and "no Python code" in result.note


@pytest.mark.slow
@pytest.mark.integration
async def test_review_merges_model_findings_with_the_static_ones(
    make_agent: MakeAgent, llm: CompletionsBackend, server: FakeOpenAIServer
) -> None:
    reply = (
        "ledger/invoices.py:43: major: mutable default argument `statuses` is shared\n"
        "ledger/invoices.py:47: minor: export() has no docstring\n"
        "ledger/settings.py:4: critical: a live Stripe secret is committed\n"
    )
    server.script_replies(model_of("code_review"), [reply])
    agent = await make_agent("code_review", llm.generate)
    result = await agent.review(REVIEW_DIFF)
    assert result.generated and result.note is None
    keys = [(f.file, f.line, f.rule) for f in result.findings]
    assert len(keys) == len(set(keys)), "one finding per file, line and rule"
    assert set(keys) == EXPECTED_STATIC | {("ledger/invoices.py", 47, "model")}
    model_made = [f for f in result.findings if f.origin == "model"]
    assert [(f.line, f.message) for f in model_made] == [(47, "export() has no docstring")]
    (call,) = server.calls(model_of("code_review"), "completions")
    assert "file:line: severity: message" in call["prompt"]


@pytest.mark.slow
@pytest.mark.integration
async def test_evolution_through_the_agent_survives_a_looping_variant_and_improves(
    make_agent: MakeAgent, llm: CompletionsBackend, server: FakeOpenAIServer
) -> None:
    model = model_of("se_darwin")
    server.script_replies(model, [fenced(LOOPING_FIB), fenced(FAST_FIB)])
    agent = await make_agent("se_darwin", llm.generate)
    result = await agent.evolve(SLOW_FIB, FIB_TESTS, generations=2, population=1)
    assert result.generated and result.improved
    assert result.original.killed_reason == "timeout"  # too slow for the limit
    looping = result.history[1][0]
    assert looping.killed_reason == "timeout" and looping.score == 0.0
    assert result.best_source.strip() == FAST_FIB.strip()
    assert (result.best.passed, result.best.total, result.best.generation) == (2, 2, 2)
    assert result.stopped_reason == "generation limit reached (2)"
    first, second = (c["prompt"] for c in server.calls(model, "completions"))
    assert "fib(n - 1) + fib(n - 2)" in first
    assert "killed: timeout" in second, "the second prompt shows how the last variant fared"
    assert any(s.source.endswith(".md") for s in result.sources)
    assert "evolution" not in result.as_dict()
