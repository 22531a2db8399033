"""The operations files: alert rules pass promtool (syntax and unit tests), every alert links
a runbook that exists, and every metric an alert or a dashboard panel queries is one that a
live `genesis serve` really exports (with the label names it really has)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.testing.server_process import serve
from genesis.tokens import HFTokenizer

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
DASHBOARD = REPO / "deploy" / "grafana" / "genesis.json"
RUNBOOKS = REPO / "docs" / "runbooks"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# PromQL words that are not metric names (aggregations and functions are followed by "(").
_KEYWORDS = frozenset(
    "and or unless by without on ignoring group_left group_right bool offset".split()
)
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        reason = "promtool is not installed (Debian package prometheus)"
        if IN_CI:
            pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
        pytest.skip(reason)
    return exe


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(metric, label): the metric must exist and carry the label.
            metric, label = re.fullmatch(
                rf"label_values\(({_NAME}),\s*(\w+)\)", variable["query"]["query"]
            ).groups()  # type: ignore[union-attr]
            queries.append(f"{metric}{{{label}!=''}}")
    return queries


def selectors(expr: str) -> dict[str, set[str]]:
    """The metric names an expression reads, each with the label names it matches on."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    # Grouping label lists are not metrics: by (le, agent), on(), group_left (x).
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found: dict[str, set[str]] = {}
    for match in re.finditer(rf"(?<![\w.$])({_NAME})\s*(\{{[^}}]*\}})?", expr):
        name, braces = match.group(1), match.group(2)
        rest = expr[match.end() :].lstrip()
        if name in _KEYWORDS or (braces is None and rest.startswith("(")):
            continue  # a keyword, a function or an aggregation
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", braces or ""))
        found.setdefault(name, set()).update(labels)
    return found


def test_selectors_reads_metric_names_and_their_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, agent) (rate(x_bucket{outcome="ok", '
        'agent=~"$agent"}[5m]))) > 2 and on() sum(y) > 0 or absent(z{a!="b"})'
    )
    assert selectors(expr) == {"x_bucket": {"outcome", "agent"}, "y": set(), "z": {"a"}}


def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_links_a_runbook_that_exists() -> None:
    linked = set()
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        assert (REPO / url).is_file(), f"{rule['alert']}: {url} does not exist"
        linked.add(Path(url).name)
    wanted = {"model-failure.md", "high-latency.md", "cost-overrun.md", "redis-outage.md"}
    assert wanted <= linked


class Scrape:
    """What a /metrics text declares (``# TYPE``) and the label names of its samples."""

    def __init__(self, text: str) -> None:
        self.declared: set[str] = set()
        self.labels: dict[str, set[str]] = defaultdict(set)
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
                self.declared.update(name + s for s in suffixes)
            elif line and not line.startswith("#"):
                name, _, rest = line.partition("{")
                name = name.split()[0]
                self.labels[name].update(re.findall(r'(\w+)="', rest))

    def problems(self, expr: str) -> list[str]:
        out = []
        for name, labels in selectors(expr).items():
            if name not in self.declared and name not in self.labels:
                out.append(f"{name} is not exported")
            elif name in self.labels and not labels <= self.labels[name] | {"le"}:
                out.append(f"{name} has no label {sorted(labels - self.labels[name])}")
        return out


@pytest.fixture(scope="module")
def scrape(
    tmp_path_factory: pytest.TempPathFactory, demo_home: Path, tokenizers_dir: Path
) -> Iterator[Scrape]:
    """/metrics of a live server after traffic that makes series exist: answers, a fallback
    (the fine-tuned model fails), Redis operations, a rejected request, budgets set."""
    finetuned = "ft:open-mistral-7b:genesis:support-v3"
    tokenizer = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    prefix = f"gops{os.getpid()}"
    with (
        FakeOpenAIServer(tokenizer, [finetuned, "open-mistral-7b"]) as llm,
        serve(
            demo_home,
            "llm.backend=chat",
            f"llm.base_url={llm.base_url}",
            "llm.max_retries=0",
            "redis.url=redis://127.0.0.1:6379/0",
            f"cache.prefix={prefix}",
            "budgets.cost_per_hour_usd=5",
            "budgets.cost_per_day_usd=50",
        ) as server,
    ):
        llm.script(finetuned, [500])
        for question in ("How do I rotate an API key?", "Which regions are available?"):
            body = {"question": question, "agent": "support"}
            response = httpx.post(server.url + "/v1/ask", json=body, timeout=60)
            assert response.status_code == 200, response.text
        rejected = httpx.post(server.url + "/v1/agents/nobody/query", json={"question": "hi"})
        assert rejected.status_code == 404
        yield Scrape(httpx.get(server.url + "/metrics", timeout=30).text)
    with redis.Redis.from_url("redis://127.0.0.1:6379/0") as client:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


@pytest.mark.slow
@pytest.mark.integration
def test_traffic_made_the_series_the_alerts_rely_on(scrape: Scrape) -> None:
    for name in (
        "genesis_requests_total",
        "genesis_request_duration_seconds_bucket",
        "genesis_model_fallbacks_total",
        "genesis_token_cache_lookups_total",
        "genesis_breaker_state",
        "genesis_redis_operation_duration_seconds_bucket",
        "genesis_cost_budget_usd",
        "genesis_stage_duration_seconds_bucket",
    ):
        assert scrape.labels.get(name), f"no {name} samples"
    # ...and the check catches a misspelt metric or a label the metric does not have.
    assert scrape.problems('rate(genesis_requests_total{status="ok"}[5m]) / genesis_nope') == [
        "genesis_requests_total has no label ['status']",
        "genesis_nope is not exported",
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_every_alert_refers_to_exported_metrics(scrape: Scrape) -> None:
    problems = {r["alert"]: scrape.problems(r["expr"]) for r in _rules()}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.slow
@pytest.mark.integration
def test_every_dashboard_panel_refers_to_exported_metrics(scrape: Scrape) -> None:
    queries = _panel_queries()
    assert len(queries) >= 14
    problems = {q: scrape.problems(q) for q in queries}
    assert {k: v for k, v in problems.items() if v} == {}
