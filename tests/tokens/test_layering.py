"""``tokens`` sits below ``llm``: importing it never loads the LLM backends."""

from __future__ import annotations

import subprocess
import sys


def test_importing_tokens_loads_no_llm_module() -> None:
    code = (
        "import sys, genesis.tokens\n"
        "print(sorted(m for m in sys.modules if m.startswith('genesis.llm')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
