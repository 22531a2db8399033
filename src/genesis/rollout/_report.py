"""``genesis report AGENT``: the rollout's evidence as a self-contained HTML page (Plotly,
its JavaScript inline, so it opens offline) and as Markdown."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from genesis.rollout._service import Rollout
from genesis.rollout._stats import Arm, proportion_difference, quantile_bounds, wilson

_COLOURS = {"finetuned": "#d62728", "baseline": "#1f77b4"}
_BINS = 12


@dataclass(frozen=True, slots=True)
class Series:
    """One variant's metric per time bin: value and a 95% band (None where too few)."""

    t: list[float]
    value: list[float | None]
    low: list[float | None]
    high: list[float | None]


def report_data(rollout: Rollout, agent: str) -> dict[str, Any]:
    """Everything the report shows, as plain data (also what ``--json`` would print)."""
    status = rollout.status(agent)
    experiment = rollout.experiment(agent)
    arms = rollout.arms(agent, experiment) if experiment else None
    series: dict[str, Any] = {}
    if arms is not None:
        edges = _edges(arms[0], arms[1])
        for name, arm in zip(("finetuned", "baseline"), arms, strict=True):
            series[name] = {
                "success_rate": _binned(arm, edges, _success),
                "p95_latency_ms": _binned(arm, edges, _p95),
                "cost_per_request_usd": _binned(arm, edges, _cost),
            }
        series["difference"] = _difference(arms[0], arms[1], edges, rollout)
    return {"status": status, "series": series}


def _edges(f: Arm, b: Arm) -> np.ndarray:
    ts = np.concatenate([f.ts, b.ts])
    if ts.size == 0:
        return np.array([0.0, 1.0])
    return np.linspace(ts.min(), ts.max() + 1e-6, _BINS + 1)


def _binned(arm: Arm, edges: np.ndarray, metric: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"t": [], "value": [], "low": [], "high": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        part = (arm.ts >= lo) & (arm.ts < hi)
        value, low, high = metric(arm, part) if part.sum() >= 20 else (None, None, None)
        for key, item in zip(out, ((lo + hi) / 2, value, low, high), strict=True):
            out[key].append(item)
    return out


def _success(arm: Arm, part: np.ndarray) -> tuple[float, float, float]:
    n, x = int(part.sum()), int(arm.success[part].sum())
    low, high = wilson(x, n)
    return x / n, low, high


def _p95(arm: Arm, part: np.ndarray) -> tuple[float | None, float | None, float | None]:
    values = arm.latency_ms[part]
    bounds = quantile_bounds(values, 0.95, 0.025)
    value = float(np.percentile(values, 95))
    return (value, bounds[0], bounds[1]) if bounds else (value, None, None)


def _cost(arm: Arm, part: np.ndarray) -> tuple[float, float, float]:
    values = arm.cost_usd[part]
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(values.size)
    mean = float(values.mean())
    return mean, mean - half, mean + half


def _difference(f: Arm, b: Arm, edges: np.ndarray, rollout: Rollout) -> dict[str, list[Any]]:
    """Cumulative success-rate difference with its always-valid band, at each bin's end."""
    gates = rollout.settings.gates
    out: dict[str, list[Any]] = {"t": [], "value": [], "low": [], "high": []}
    for end in edges[1:]:
        fm, bm = f.ts < end, b.ts < end
        if min(fm.sum(), bm.sum()) < 30:
            continue
        est, low, high = proportion_difference(
            f.success[fm].sum(), fm.sum(), b.success[bm].sum(), bm.sum(), gates.mde, gates.alpha / 4
        )
        for key, item in zip(out, (float(end), float(est), float(low), float(high)), strict=True):
            out[key].append(item)
    return out


# -- HTML ----------------------------------------------------------------------------------


def render_html(data: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    from plotly.io import to_html

    figures = _figures(go, data["series"])
    divs = [
        to_html(fig, include_plotlyjs=(i == 0), full_html=False, config={"responsive": True})
        for i, fig in enumerate(figures)
    ]
    status = data["status"]
    return _PAGE.format(
        title=html.escape(f"Rollout report: {status['agent']}"),
        summary=_summary_html(status),
        charts="\n".join(f'<div class="chart">{d}</div>' for d in divs),
        changes=_changes_html(status["changes"]),
        evidence=html.escape(json.dumps(status["verdict"], indent=2)),
    )


def _figures(go: Any, series: dict[str, Any]) -> list[Any]:
    specs = [
        ("success_rate", "Success rate (95% band)", ".0%"),
        ("p95_latency_ms", "p95 latency, ms (95% order-statistic band)", ""),
        ("cost_per_request_usd", "Cost per request, USD (95% band)", ""),
    ]
    figures = []
    for key, title, fmt in specs:
        fig = go.Figure()
        for variant in ("finetuned", "baseline"):
            if variant in series:
                _band(go, fig, series[variant][key], variant, _COLOURS[variant])
        fig.update_layout(title=title, height=340, yaxis_tickformat=fmt, xaxis_title="time")
        figures.append(fig)
    if series.get("difference", {}).get("t"):
        fig = go.Figure()
        _band(go, fig, series["difference"], "fine-tuned - baseline", "#2ca02c")
        fig.add_hline(y=0, line_dash="dot")
        fig.update_layout(
            title="Success-rate difference, cumulative (always-valid band)",
            height=340,
            yaxis_tickformat=".1%",
        )
        figures.append(fig)
    return figures


def _band(go: Any, fig: Any, s: dict[str, list[Any]], name: str, colour: str) -> None:
    t = [_when(x) for x in s["t"]]
    fig.add_trace(
        go.Scatter(x=t, y=s["high"], mode="lines", line={"width": 0}, showlegend=False, name=name)
    )
    fig.add_trace(
        go.Scatter(
            x=t,
            y=s["low"],
            mode="lines",
            fill="tonexty",
            line={"width": 0},
            fillcolor=_alpha(colour),
            showlegend=False,
            name=name,
        )
    )
    fig.add_trace(
        go.Scatter(x=t, y=s["value"], mode="lines+markers", name=name, line={"color": colour})
    )


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _alpha(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.2)"


def _summary_html(status: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in _facts(status))
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in status["verdict"]["reasons"])
    return f"<table>{rows}</table><h3>Why (current verdict)</h3><ul>{reasons}</ul>"


def _facts(status: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = status["verdict"]
    cmp = verdict.get("comparison") or {}
    srm = cmp.get("srm") or {}
    sample = cmp.get("sample") or {}
    state = status["state"] or {}
    esc = html.escape
    return [
        ("experiment", esc(str(status["experiment"]))),
        ("percent on fine-tuned", f"{status['percent']:g}%"),
        ("stage", esc(f"{state.get('stage', '-')} of {status['stages']}")),
        ("status", esc(str(state.get("status", "not started")))),
        ("verdict", f"<b>{esc(verdict['verdict'])}</b>"),
        ("last decision", esc(_last_decision(status["changes"]))),
        (
            "sample-ratio check",
            esc(
                f"observed {srm.get('observed')} vs {srm.get('expected_share')} split, "
                f"p = {srm.get('p_value')}, mismatch: {srm.get('mismatch')}"
            ),
        ),
        (
            "sample size",
            esc(
                f"{sample.get('reached_per_variant')} reached per variant, "
                f"{sample.get('needed_per_variant')} needed (sequential), "
                f"{sample.get('needed_fixed_horizon')} (fixed horizon)"
            ),
        ),
    ]


def _last_decision(changes: list[dict[str, Any]]) -> str:
    for change in changes:  # newest first
        if change["evidence"]:
            return (
                f"{change['action']} at {_when(change['ts'])} by {change['who']}: "
                f"{change['evidence'].get('verdict')} ({change['why']})"
            )
    return "none with recorded evidence"


def _changes_html(changes: list[dict[str, Any]]) -> str:
    head = "<tr><th>when</th><th>action</th><th>from</th><th>to</th><th>who</th><th>why</th></tr>"
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                _when(c["ts"]),
                c["action"],
                f"{c['from_percent']:g}%",
                f"{c['to_percent']:g}%",
                c["who"],
                c["why"],
            )
        )
        + "</tr>"
        for c in changes
    )
    return f"<table>{head}{rows}</table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}}pre{{background:#f6f6f6;padding:1em;overflow:auto;
max-height:30em}}</style></head>
<body><h1>{title}</h1>
<h2>Current stage and verdict</h2>{summary}
<h2>Variants over time</h2>{charts}
<h2>History of changes</h2>{changes}
<h2>Evidence</h2><pre>{evidence}</pre>
</body></html>
"""


# -- Markdown ------------------------------------------------------------------------------


def render_markdown(data: dict[str, Any]) -> str:
    status = data["status"]
    lines = [f"# Rollout report: {status['agent']}", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {_strip(v)} |" for k, v in _facts(status)]
    lines += ["", "## Why", ""] + [f"- {r}" for r in status["verdict"]["reasons"]]
    lines += ["", "## Variants", "", _variants_md(status["verdict"].get("comparison"))]
    lines += ["", "## History of changes", "", "| when | action | from | to | who | why |"]
    lines += ["|---|---|---|---|---|---|"]
    for c in status["changes"]:
        pct = f"{c['from_percent']:g}% | {c['to_percent']:g}%"
        lines.append(f"| {_when(c['ts'])} | {c['action']} | {pct} | {c['who']} | {c['why']} |")
    return "\n".join(lines) + "\n"


def _variants_md(cmp: dict[str, Any] | None) -> str:
    if not cmp:
        return "No data yet."
    keys = [
        "n",
        "success_rate",
        "error_rate",
        "fallback_rate",
        "abstention_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "cost_per_request_usd",
        "feedback_mean",
    ]
    rows = ["| metric | fine-tuned | baseline |", "|---|---|---|"]
    rows += [f"| {k} | {cmp['finetuned'][k]} | {cmp['baseline'][k]} |" for k in keys]
    return "\n".join(rows)


def _strip(text: str) -> str:
    return html.unescape(text.replace("<b>", "**").replace("</b>", "**"))
