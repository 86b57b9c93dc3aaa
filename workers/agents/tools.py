"""Tools an LLM agent may call: a ``Tool``, a ``Registry`` of them by name, the
``FLEET_TOOLS`` loader, and ``BUILTIN``, a registry of two harmless tools.

A call the model gets wrong (an unknown tool, arguments that are not a JSON object, a
tool that raises) gives a tool result saying so, never an exception: the model reads
it at its next step and can correct itself.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from openai.types.chat import ChatCompletionToolParam

from broker.settings import ConfigError
from workers.agents.arithmetic import ALLOWED, evaluate

log = structlog.get_logger()

# OpenAI's rule for function names; other servers accept at least these.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A result longer than this is cut: a runaway tool must not fill the model's context.
MAX_RESULT_CHARS = 20_000

ToolFunction = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: ``parameters`` is the JSON schema of its
    arguments, ``function`` gets them parsed and returns the result as text."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: ToolFunction
    needs_approval: bool = False  # the user approves each call first (see LLMAgent)

    def schema(self) -> ChatCompletionToolParam:
        """The tool as Chat Completions' ``tools`` lists it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


class Registry:
    """Tools by name; runs the model's calls."""

    def __init__(self, *tools: Tool) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if not TOOL_NAME.fullmatch(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match {TOOL_NAME.pattern}")
        if tool.name in self._tools:
            raise ValueError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def needs_approval(self, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.needs_approval

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[ChatCompletionToolParam]:
        """Every tool, for the request's ``tools``."""
        return [tool.schema() for tool in self._tools.values()]

    async def run(self, name: str, arguments: str) -> str:
        """The result of calling ``name`` with ``arguments`` (JSON text, as the model
        wrote it); what went wrong, if anything, for the model to read."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return f"error: there is no tool named {name!r} (the tools are: {known})"
        parsed = _parse(name, arguments)
        if isinstance(parsed, str):
            return parsed
        missing = [key for key in tool.parameters.get("required", []) if key not in parsed]
        if missing:
            return f"error: {name} needs the argument(s) {', '.join(missing)}"
        try:
            result = await tool.function(parsed)
        except Exception as exc:  # a tool's failure is the model's to read; cancellation is not
            log.warning("tool_failed", tool=name, error=repr(exc))
            return f"error: {name} failed: {type(exc).__name__}: {exc}"
        if len(result) > MAX_RESULT_CHARS:
            return result[:MAX_RESULT_CHARS] + f"\n[cut: {len(result)} characters in all]"
        return result


def _parse(name: str, arguments: str) -> dict[str, Any] | str:
    """The arguments as a dict, or the error for the model."""
    if not arguments.strip():
        return {}  # some servers send "" for a call without arguments
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"error: the arguments of {name} are not valid JSON ({exc}); send a JSON object"
    if not isinstance(parsed, dict):
        return f"error: the arguments of {name} must be a JSON object, not {type(parsed).__name__}"
    return parsed


def load_registry(spec: str) -> Registry:
    """Resolve ``module:registry`` (``FLEET_TOOLS``) to a ``Registry`` instance."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"FLEET_TOOLS must look like 'module:registry', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"FLEET_TOOLS {spec!r}: cannot import {module_name!r}: {exc}") from None
    registry = getattr(module, attribute, None)
    if not isinstance(registry, Registry):
        found = "nothing" if registry is None else f"a {type(registry).__name__}"
        raise ConfigError(
            f"FLEET_TOOLS {spec!r}: {module_name}.{attribute} is {found}, not a Registry"
        )
    return registry


# --- the built-in tools (FLEET_TOOLS=workers.agents.tools:BUILTIN) -----------------
async def _current_time(arguments: dict[str, Any]) -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def _calculate(arguments: dict[str, Any]) -> str:
    expression = arguments["expression"]
    if not isinstance(expression, str):
        raise TypeError("expression must be a string")
    return str(evaluate(expression))


CURRENT_TIME = Tool(
    name="current_time",
    description="The current date and time in UTC, in ISO 8601.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    function=_current_time,
)
CALCULATE = Tool(
    name="calculate",
    description=f"The value of an arithmetic expression: {ALLOWED} only.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 4 ** 2"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    function=_calculate,
)
BUILTIN = Registry(CURRENT_TIME, CALCULATE)
