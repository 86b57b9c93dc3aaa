"""Node.js for the tests that drive the official JavaScript client: ``node``, with a
directory's npm dependencies installed (from its package-lock.json) on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NPM_TIMEOUT = 300.0


def node_with_modules(directory: Path) -> str:
    """The ``node`` executable, once ``directory``'s ``socket.io-client`` is installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the JavaScript client tests need Node.js 18+ and npm on PATH "
            f"(node: {node}, npm: {npm}); install them (e.g. apt-get install nodejs npm)",
            pytrace=False,
        )
    if not (directory / "node_modules" / "socket.io-client" / "package.json").is_file():
        command = "ci" if (directory / "package-lock.json").is_file() else "install"
        result = subprocess.run(
            [npm, command, "--prefix", str(directory), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`npm {command} --prefix {directory}` failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
    return node
