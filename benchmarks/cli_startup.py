"""What a warm `genesis ask` costs next to Python's own start-up and imports.

    python benchmarks/cli_startup.py --json out.json [--repetitions 7] [--question Q]
                                     [--src DIR] [--baseline DIR]

In one run, on a fresh ``GENESIS_HOME`` that one `genesis ask` warmed first (it ingests the
demo knowledge base), each repetition times these commands as child processes, one after
another (interleaved, so a noisy machine slows every command alike):

- ``python``: ``python -c pass``, the interpreter alone;
- ``import_cli``: ``python -c "import genesis.cli"``;
- ``ask_imports``: importing every module a warm `genesis ask` of the repeated question ends
  up with loaded (listed by one such ask run in-process first): the imports that ask cannot
  avoid (a new question also loads ONNX Runtime, to embed it);
- ``ask_repeat``: ``python -m genesis ask QUESTION --json``, the question the warm-up asked;
- ``ask_new``: the same with a question of the labelled tuning set that no earlier call asked
  (its query is embedded, so the model loads).

Writes ``first_ask_s`` (the warm-up: a fresh home, demo ingestion included; one sample),
medians (seconds), the ratios ``ask_repeat / ask_imports``, ``ask_new / ask_imports``
and ``ask_repeat / import_cli``, and the in-process total the asks reported (``--json``'s
``timings_ms.total``). Children run with this checkout's ``src`` first on ``PYTHONPATH``, BLAS
pinned to one thread and bytecode caching on (in a private ``PYTHONPYCACHEPREFIX``), as an
installed package has it, even where the environment sets ``PYTHONDONTWRITEBYTECODE``.
``--src`` measures another checkout's ``src``; ``--baseline DIR`` measures a second one in
the same run, interleaved with the first, and adds ``baseline`` (its results) and
``baseline_vs_src`` (its medians over the first's: above 1, the first is faster), e.g. with
``git archive OLD src | tar -x -C /tmp/old`` and ``--baseline /tmp/old/src``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "benchmarks" / "data" / "answer_quality" / "tune_questions.jsonl"
DEFAULT_QUESTION = "How do I rotate an API key?"

# Run in a child after a warm ask: which modules did it load? (`__main__` modules would run.)
_LIST_MODULES = """
import json, sys
from genesis.cli import app
try:
    app(["ask", sys.argv[1], "--json"], standalone_mode=False)
finally:
    names = sorted(m for m in sys.modules if not m.endswith("__main__"))
    with open(sys.argv[2], "w") as fh:
        json.dump(names, fh)
"""
_IMPORT_LISTED = """
import importlib, json, sys
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def _env(src: Path, home: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    path = [str(src), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        PYTHONPYCACHEPREFIX=str(pycache),
        GENESIS_HOME=str(home),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    return env


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def _new_questions(count: int, asked: str) -> list[str]:
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    questions = [r["question"] for r in rows if r["question"] != asked]
    if len(questions) < count:
        raise SystemExit(f"only {len(questions)} questions in {QUESTIONS}")
    return questions[:count]


class _Subject:
    """One checkout's ``src``: its own home and bytecode cache, warmed once."""

    def __init__(self, src: Path, question: str, work: Path) -> None:
        self.src = src
        self.env = _env(src, work / "home", work / "pycache")
        self.listed = work / "modules.json"
        py = sys.executable
        # Warm-up: ingest the demo, write the caches, compile bytecode, list the ask's modules.
        self.first_ask_s, _ = _run([py, "-m", "genesis", "ask", question, "--json"], self.env)
        _run([py, "-c", _LIST_MODULES, question, str(self.listed)], self.env)
        self.commands = {
            "python": [py, "-c", "pass"],
            "import_cli": [py, "-c", "import genesis.cli"],
            "ask_imports": [py, "-c", _IMPORT_LISTED, str(self.listed)],
            "ask_repeat": [py, "-m", "genesis", "ask", question, "--json"],
        }
        self.samples: dict[str, list[float]] = {n: [] for n in [*self.commands, "ask_new"]}
        self.reported: dict[str, list[float]] = {"ask_repeat": [], "ask_new": []}

    def repetition(self, new_question: str) -> None:
        ask_new = [sys.executable, "-m", "genesis", "ask", new_question, "--json"]
        for name, cmd in {**self.commands, "ask_new": ask_new}.items():
            elapsed, stdout = _run(cmd, self.env)
            self.samples[name].append(elapsed)
            if name in self.reported:
                total = json.loads(stdout)["answer"]["timings_ms"]["total"]
                self.reported[name].append(total)

    def result(self) -> dict[str, Any]:
        medians = {name: statistics.median(values) for name, values in self.samples.items()}
        ask, imports = medians["ask_repeat"], medians["ask_imports"]
        return {
            "src": str(self.src),
            "first_ask_s": round(self.first_ask_s, 3),
            "modules_loaded_by_ask": len(json.loads(self.listed.read_text(encoding="utf-8"))),
            "median_s": {k: round(v, 4) for k, v in medians.items()},
            "ratios": {
                "ask_repeat_vs_ask_imports": round(ask / imports, 3),
                "ask_new_vs_ask_imports": round(medians["ask_new"] / imports, 3),
                "ask_repeat_vs_import_cli": round(ask / medians["import_cli"], 3),
            },
            "over_imports_s": {
                "ask_repeat": round(ask - imports, 4),
                "ask_new": round(medians["ask_new"] - imports, 4),
            },
            "reported_total_ms_median": {
                k: round(statistics.median(v), 2) for k, v in self.reported.items()
            },
            "samples_s": {k: [round(v, 4) for v in vs] for k, vs in self.samples.items()},
        }


def measure(
    repetitions: int, question: str, src: Path, work: Path, baseline: Path | None = None
) -> dict[str, Any]:
    """``src`` (and ``baseline``, interleaved with it) measured ``repetitions`` times."""
    subjects = [_Subject(src, question, work / "subject")]
    if baseline is not None:
        subjects.append(_Subject(baseline, question, work / "baseline"))
    for new_question in _new_questions(repetitions, question):
        for subject in subjects:
            subject.repetition(new_question)
    result: dict[str, Any] = {"repetitions": repetitions, "question": question}
    result["bytecode_cache"] = True
    result.update(subjects[0].result())
    if baseline is not None:
        base = subjects[1].result()
        result["baseline"] = base
        result["baseline_vs_src"] = {
            name: round(base["median_s"][name] / result["median_s"][name], 3)
            for name in ("import_cli", "ask_imports", "ask_repeat", "ask_new")
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the genesis to measure")
    parser.add_argument("--baseline", type=Path, help="another src, measured interleaved")
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    with tempfile.TemporaryDirectory(prefix="genesis-cli-startup-") as tmp:
        result = measure(args.repetitions, args.question, args.src.resolve(), Path(tmp), baseline)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    keys = ("median_s", "ratios", "over_imports_s", "baseline_vs_src")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))


if __name__ == "__main__":
    main()
