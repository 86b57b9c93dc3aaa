"""The tool registry: schemas, running calls the model got wrong, the built-in tools
(the arithmetic one refuses anything but arithmetic), and ``FLEET_TOOLS`` loading."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.settings import ConfigError, Settings
from workers.agents.llm import LLMAgent
from workers.agents.tools import BUILTIN, MAX_RESULT_CHARS, Registry, Tool, load_registry

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def tool(name: str, result: str = "ok", error: Exception | None = None) -> Tool:
    async def function(arguments: dict[str, Any]) -> str:
        if error is not None:
            raise error
        return result

    schema = {**OBJECT, "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    return Tool(name, f"The {name} tool.", schema, function)


def test_the_schemas_are_openai_function_tools() -> None:
    [clock, calculate] = BUILTIN.schemas()
    assert clock == {
        "type": "function",
        "function": {
            "name": "current_time",
            "description": "The current date and time in UTC, in ISO 8601.",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }
    assert calculate["function"]["name"] == "calculate"
    assert calculate["function"].get("parameters", {})["required"] == ["expression"]
    json.dumps(BUILTIN.schemas())  # what the SDK sends: plain JSON
    assert Registry().schemas() == []


def test_names_are_checked_when_tools_are_added() -> None:
    with pytest.raises(ValueError, match="must match"):
        Registry(tool("has space"))
    with pytest.raises(ValueError, match="two tools are named 'twice'"):
        Registry(tool("twice"), tool("twice"))
    registry = Registry(tool("a"))
    assert "a" in registry and "b" not in registry and len(registry) == 1


@pytest.mark.parametrize(
    ("name", "arguments", "result"),
    [
        ("echo", '{"x": 1}', "ok"),
        ("nope", "{}", "error: there is no tool named 'nope' (the tools are: echo, broken)"),
        ("echo", '{"x": 1', "error: the arguments of echo are not valid JSON"),
        ("echo", "[1, 2]", "error: the arguments of echo must be a JSON object, not list"),
        ("echo", "{}", "error: echo needs the argument(s) x"),
        ("echo", "", "error: echo needs the argument(s) x"),  # "" is taken as {}
        ("broken", '{"x": 1}', "error: broken failed: RuntimeError: disk on fire"),
    ],
)
async def test_a_bad_call_gives_a_result_saying_what_went_wrong(
    name: str, arguments: str, result: str
) -> None:
    registry = Registry(tool("echo"), tool("broken", error=RuntimeError("disk on fire")))
    assert (await registry.run(name, arguments)).startswith(result)


async def test_a_cancelled_tool_is_cancelled_not_a_result() -> None:
    started = asyncio.Event()

    async def forever(arguments: dict[str, Any]) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    registry = Registry(Tool("forever", "Waits.", OBJECT, forever))
    task = asyncio.create_task(registry.run("forever", "{}"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_huge_result_is_cut() -> None:
    registry = Registry(tool("big", result="x" * (MAX_RESULT_CHARS + 10)))
    result = await registry.run("big", '{"x": 1}')
    assert result.startswith("x" * MAX_RESULT_CHARS)
    assert result.endswith(f"[cut: {MAX_RESULT_CHARS + 10} characters in all]")


async def test_current_time_is_utc_now() -> None:
    result = await BUILTIN.run("current_time", "{}")
    now = datetime.fromisoformat(result)
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=2)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 ** 10 % 1000", "24"),
        ("7 / 2", "3.5"),
        ("-(4 - 6) * +3", "6"),
        ("2 ** -1", "0.5"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("10 ** 30", str(10**30)),
    ],
)
async def test_calculate_does_arithmetic(expression: str, value: str) -> None:
    assert await BUILTIN.run("calculate", json.dumps({"expression": expression})) == value


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("__import__('os').system('true')", "(found Call)"),
        ("open('/etc/passwd').read()", "(found Call)"),
        ("x + 1", "(found Name)"),
        ("(1).real", "(found Attribute)"),
        ("'a' * 3", "(found the str 'a')"),
        ("[1, 2]", "(found List)"),
        ("True + 1", "(found True)"),
        ("1j * 2", "(found the complex 1j)"),
        ("7 // 2", "(found the operator FloorDiv)"),
        ("1 << 100000", "(found the operator LShift)"),
        ("1 < 2", "(found Compare)"),
        ("1 if 1 else 2", "(found IfExp)"),
        ("lambda: 1", "(found Lambda)"),
        ("1; 2", "not an arithmetic expression"),
        ("9 ** 9 ** 9", "the result is too large"),
        ("(2 ** 4000) * (2 ** 4000)", "the result is too large"),
        ("(-8) ** 0.5", "the result is not a real number"),
        ("1" + " + 1" * 300, "longer than 500 characters"),
    ],
)
async def test_calculate_refuses_anything_but_arithmetic(expression: str, says: str) -> None:
    started = time.monotonic()
    result = await BUILTIN.run("calculate", json.dumps({"expression": expression}))
    assert result.startswith("error: calculate failed: NotArithmetic: ")
    assert says in result
    assert time.monotonic() - started < 1  # refused, not computed


async def test_calculate_reports_arithmetic_errors() -> None:
    assert await BUILTIN.run("calculate", '{"expression": "1 / 0"}') == (
        "error: calculate failed: ZeroDivisionError: division by zero"
    )
    assert (await BUILTIN.run("calculate", '{"expression": 3}')).startswith(
        "error: calculate failed: TypeError: expression must be a string"
    )


def test_fleet_tools_loads_a_registry() -> None:
    assert load_registry("workers.agents.tools:BUILTIN") is BUILTIN


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("workers.agents.tools", "FLEET_TOOLS must look like 'module:registry'"),
        (":BUILTIN", "FLEET_TOOLS must look like 'module:registry'"),
        (
            "nowhere.tools:BUILTIN",
            "FLEET_TOOLS 'nowhere.tools:BUILTIN': cannot import 'nowhere.tools'",
        ),
        ("workers.agents.tools:NOPE", "workers.agents.tools.NOPE is nothing, not a Registry"),
        (
            "workers.agents.tools:CALCULATE",
            "workers.agents.tools.CALCULATE is a Tool, not a Registry",
        ),
    ],
)
def test_a_bad_fleet_tools_is_a_clear_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_registry(spec)
    assert message in str(raised.value)
    with pytest.raises(ConfigError, match="FLEET_TOOLS"):
        LLMAgent(Settings(tools=spec))
