"""The public names are a promise: changing them is a decision, not an accident."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import genesis

REPO = Path(__file__).resolve().parents[1]


def test_exported_names_of_genesis() -> None:
    assert genesis.__all__ == [
        "AskResult",
        "Genesis",
        "GenesisError",
        "RAGAnswer",
        "Settings",
        "TokenCachedRAG",
        "__version__",
        "load_settings",
    ]
    for name in genesis.__all__:
        assert getattr(genesis, name) is not None


@pytest.mark.parametrize(
    "package",
    [
        "genesis.agents",
        "genesis.cache",
        "genesis.knowledge",
        "genesis.llm",
        "genesis.observability",
        "genesis.rag",
        "genesis.router",
        "genesis.tokens",
    ],
)
def test_subpackages_export_existing_names_once(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "README must open with a bash block of the two set-up commands"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "genesis ask" in commands[0]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci
