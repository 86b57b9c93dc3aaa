"""The LLM agent's clients: what their first request would otherwise do on the event loop."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_llm_agent_imports_the_sdks_resources() -> None:
    # Imported lazily by the SDK, they take a second or more of blocking work: at the
    # first LLM call that stalled the worker's event loop past its watchdog's budget.
    # A fresh interpreter, as a worker process starts.
    probe = "import sys, workers.agents.llm; print('openai.resources.chat' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "True"
