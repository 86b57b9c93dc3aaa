"""The LLM agent against the fake LLM (in-process, real HTTP, the official SDK), through
an in-memory ``Turn``: streaming, tool rounds, resuming after a crash, the history it
sends, steering, errors and cancellation."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from broker.events import Event, NewEvent, Source
from broker.settings import Settings
from fleet.fake_llm.server import FakeLLM
from fleet.harness import free_port
from tests.conftest import wait_for_event
from workers.agents import Turn, TurnFailed
from workers.agents.clients import NO_KEY, close_clients
from workers.agents.llm import HISTORY_EVENTS, LLMAgent
from workers.agents.tools import Registry, Tool
from workers.agents.transcript import SYSTEM_PROMPT

Record = dict[str, Any]
T = TypeVar("T")
BUILTIN = "workers.agents.tools:BUILTIN"
SECRET = "sk-test-" + "s3cr3t" * 6


class FakeTurn:
    """The ``Turn`` protocol over an in-memory log, recording what the agent does.
    Built with ``earlier`` events (earlier turns), then its own user message; steps
    logged before ``run_turn`` (``logged``) make it a resumed turn."""

    conversation_id = "conv-test"
    epoch = 7

    def __init__(
        self, content: str, earlier: Sequence[tuple[Source, str, Mapping[str, Any]]] = ()
    ) -> None:
        self.events: list[Event] = []
        for source, kind, data in earlier:
            self.append(source, kind, data)
        self.turn_id = f"action-{len(self.events)}"
        self.message = self.append(
            "user", "message", {"content": content, "action_id": self.turn_id}
        )
        self._steps: list[Event] = []
        self.steps: Sequence[Event] = self._steps
        self.deltas: list[tuple[int, str]] = []  # (step, delta)
        self.first_delta = asyncio.Event()
        self.answer: Event | None = None
        self.taken: list[str] = []  # action ids of the steered messages handed over
        self._steered: list[Event] = []
        self.choice = "yes"  # what the user answers to every approval request
        self.asked: list[str] = []  # the prompts of the approval requests
        self.read_after: int | None = None  # where the agent began reading the log

    def append(self, source: Source, kind: str, data: Mapping[str, Any]) -> Event:
        event = Event(len(self.events), self.conversation_id, source, kind, dict(data), time.time())
        self.events.append(event)
        return event

    def logged(self, kind: str, data: Mapping[str, Any]) -> Event:
        """Log a step as the runner does: with ``turn_id`` and ``step``."""
        assert self.answer is None, "a step after the turn's answer"
        step = self.append(
            "agent", kind, {**data, "turn_id": self.turn_id, "step": len(self._steps)}
        )
        self._steps.append(step)
        return step

    def steer(self, content: str) -> Event:
        """A user message steered into this turn: logged, and handed over by ``steered``."""
        data = {
            "content": content,
            "action_id": f"steer-{len(self.events)}",
            "steered_into": self.turn_id,
        }
        event = self.append("user", "message", data)
        self._steered.append(event)
        return event

    # --- the Turn protocol ---
    def stream(self, delta: str) -> None:
        self.deltas.append((len(self._steps), delta))
        self.first_delta.set()

    async def log_step(self, kind: str, data: Mapping[str, Any]) -> Event:
        return self.logged(kind, data)

    async def ask_approval(
        self, prompt: str, options: Sequence[str] = ("yes", "no"), key: str | None = None
    ) -> str:
        data = {"request_id": f"{self.turn_id}:{key}", "prompt": prompt, "options": list(options)}
        self.logged("approval_request", data)
        self.asked.append(prompt)
        return self.choice

    async def schedule(self, at: float, payload: Any, key: str | None = None) -> str:
        raise AssertionError("the LLM agent schedules no timers")

    async def cancel_timer(self, timer_id: str) -> bool:
        raise AssertionError("the LLM agent schedules no timers")

    def steered(self) -> list[Event]:
        taken, self._steered = self._steered, []
        self.taken += [event.data["action_id"] for event in taken]
        return taken

    async def finish(self, content: str, **data: Any) -> None:
        assert self.answer is None, "finished twice"
        reply = {"content": content, "in_reply_to": self.turn_id, "turn_id": self.turn_id}
        self.answer = self.append(
            "agent", "message", {**reply, "step": len(self._steps), "steered": self.taken, **data}
        )

    async def log(self, *events: NewEvent, once: str) -> list[Event]:
        return [self.append(e.source, e.kind, e.data) for e in events]

    async def history(self, after: int = -1) -> list[Event]:
        self.read_after = after
        return [event for event in self.events if event.id > after]

    # --- what tests read ---
    def streamed(self, step: int) -> str:
        return "".join(delta for at, delta in self.deltas if at == step)

    def step_data(self) -> list[dict[str, Any]]:
        """The logged steps' data without what the runner adds."""
        return [
            {k: v for k, v in step.data.items() if k not in ("turn_id", "step")}
            for step in self._steps
        ]


def _conforms(turn: FakeTurn) -> Turn:
    return turn  # mypy checks that FakeTurn implements the protocol


class Spy:
    """A test tool that records its calls: ``lookup`` (a key's value), with an optional
    hook run during the call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.hooks: dict[str, Callable[[], None]] = {}

    def registry(self, needs_approval: bool = False) -> Registry:
        async def lookup(arguments: dict[str, Any]) -> str:
            self.calls.append(("lookup", arguments))
            self.hooks.get("lookup", lambda: None)()
            return f"value of {arguments['key']}"

        schema = {
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "required": ["key"],
        }
        return Registry(Tool("lookup", "A key's value.", schema, lookup, needs_approval))


@pytest.fixture
def settings_for(fake: FakeLLM) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "llm_base_url": f"{fake.url}/v1",
            "llm_model": "gpt-test",
            "llm_retries": 0,  # each request takes one scripted reply: tests count them
            "llm_timeout": 10.0,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., LLMAgent]]:
    def make(settings: Settings, **options: Any) -> LLMAgent:
        return LLMAgent(settings, **options)

    yield make
    await close_clients()


@pytest.fixture
def agent(settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent]) -> LLMAgent:
    return agents(settings_for())


def marker() -> str:
    return f"marker-{secrets.token_hex(4)}"


async def script(http: httpx.AsyncClient, match: str, *replies: Record) -> None:
    response = await http.post("/fake/script", json={"match": match, "replies": list(replies)})
    assert response.status_code == 201, response.text


async def recorded(http: httpx.AsyncClient) -> list[Record]:
    response = await http.get("/fake/requests")
    response.raise_for_status()
    requests: list[Record] = response.json()["requests"]
    return requests


async def sent(http: httpx.AsyncClient) -> list[list[Record]]:
    """The messages of each request the fake received, in order."""
    return [record["body"]["messages"] for record in await recorded(http)]


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    """Poll the fake's state with ``check`` until it returns something."""
    async with asyncio.timeout(timeout):
        while (found := await check()) is None:
            await asyncio.sleep(0.02)
    return found


def system() -> Record:
    return {"role": "system", "content": SYSTEM_PROMPT}


def user(content: str) -> Record:
    return {"role": "user", "content": content}


def calling(*calls: tuple[str, str, str], content: str | None = None) -> Record:
    """An assistant message with tool calls (id, name, arguments), as OpenAI takes it."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ],
    }


def tool(call_id: str, content: str) -> Record:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def answer_step(content: str, *calls: tuple[str, str, str]) -> dict[str, Any]:
    """The data of a logged answer with tool calls."""
    return {
        "content": content,
        "tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in calls],
    }


# --- streaming -----------------------------------------------------------------------
async def test_streamed_deltas_reach_the_turn_and_make_the_answer(
    agent: LLMAgent, http: httpx.AsyncClient
) -> None:
    mark = marker()
    await script(http, mark, {"content": "Hello brave new world", "chunk": "word"})
    turn = FakeTurn(f"{mark} hi")

    await agent.run_turn(turn)

    assert turn.deltas == [(0, "Hello "), (0, "brave "), (0, "new "), (0, "world")]
    assert turn.answer is not None and turn.answer.data["content"] == "Hello brave new world"
    assert turn.steps == []  # the last answer is logged by finish, not as a step
    [record] = await recorded(http)
    body = record["body"]
    assert body["messages"] == [system(), user(f"{mark} hi")]
    assert body["stream"] is True and body["model"] == "gpt-test"
    assert "tools" not in body  # no FLEET_TOOLS: none offered
    assert record["completed"] and not record["disconnected"]


async def test_messages_queued_for_later_turns_are_not_sent_yet(
    agent: LLMAgent, http: httpx.AsyncClient
) -> None:
    """With the enqueue policy, a message sent while this turn runs is in the log
    already, waiting for a turn of its own: this turn's request must not see it."""
    mark = marker()
    await script(http, mark, {"content": "First things first."})
    turn = FakeTurn(f"{mark} first")
    turn.append("user", "message", {"content": "second, later", "action_id": "later"})

    await agent.run_turn(turn)

    [record] = await recorded(http)
    assert record["body"]["messages"] == [system(), user(f"{mark} first")]


# --- tools ---------------------------------------------------------------------------
async def test_a_tool_round_logs_the_call_and_its_result_then_answers(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    agent = agents(settings_for(tools=BUILTIN))
    mark = marker()
    await script(
        http,
        mark,
        {"content": "Let me look.", "tool_calls": [{"name": "current_time", "id": "call_clock"}]},
        {"content": "It is late."},
    )
    turn = FakeTurn(f"{mark} what time is it?")
    before = datetime.now(UTC).replace(microsecond=0)

    await agent.run_turn(turn)

    [call, result] = turn.step_data()
    assert call == answer_step("Let me look.", ("call_clock", "current_time", "{}"))
    assert (result["tool_call_id"], result["name"]) == ("call_clock", "current_time")
    assert before <= datetime.fromisoformat(result["content"]) <= datetime.now(UTC)
    assert [step.data["step"] for step in turn.steps] == [0, 1]
    assert turn.answer is not None and turn.answer.data["content"] == "It is late."
    assert (turn.streamed(0), turn.streamed(1), turn.streamed(2)) == (
        "Let me look.",
        "",
        "It is late.",
    )

    first, second = await recorded(http)
    asked = [user(f"{mark} what time is it?")]
    assert first["body"]["messages"] == [system(), *asked]
    assert second["body"]["messages"] == [
        system(),
        *asked,
        calling(("call_clock", "current_time", "{}"), content="Let me look."),
        tool("call_clock", result["content"]),
    ]
    for record in (first, second):
        names = [t["function"]["name"] for t in record["body"]["tools"]]
        assert names == ["current_time", "calculate"]


@pytest.mark.parametrize("choice", ["yes", "no"])
async def test_a_tool_that_needs_approval_runs_only_once_approved(
    settings_for: Callable[..., Settings],
    agents: Callable[..., LLMAgent],
    http: httpx.AsyncClient,
    choice: str,
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry(needs_approval=True))
    mark = marker()
    call = {"name": "lookup", "id": "call_1", "arguments": {"key": "door"}}
    await script(http, mark, {"tool_calls": [call]}, {"content": "Done."})
    turn = FakeTurn(f"{mark} open the door")
    turn.choice = choice

    await agent.run_turn(turn)

    request, answer = turn.steps[1], turn.steps[2]
    assert request.kind == "approval_request"
    assert request.data["request_id"] == f"{turn.turn_id}:call_1"
    assert request.data["options"] == ["yes", "no"]
    assert turn.asked == ['Allow lookup({"key": "door"})?']
    assert answer.kind == "tool_result" and answer.data["tool_call_id"] == "call_1"
    if choice == "yes":
        assert spy.calls == [("lookup", {"key": "door"})]
        assert answer.data["content"] == "value of door"
    else:
        assert spy.calls == []
        assert answer.data["content"] == "error: the user did not allow this call of lookup"
    second = (await recorded(http))[1]
    assert [m["role"] for m in second["body"]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]


async def test_calls_streamed_a_character_at_a_time_are_assembled_and_run_in_order(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry())
    mark = marker()
    calls = [
        {"name": "lookup", "arguments": {"key": "first"}, "id": "call_1"},
        {"name": "lookup", "arguments": {"key": "second"}, "id": "call_2"},
    ]
    await script(http, mark, {"tool_calls": calls, "chunk": "char"}, {"content": "Both."})
    turn = FakeTurn(f"{mark} two lookups")

    await agent.run_turn(turn)

    assert spy.calls == [("lookup", {"key": "first"}), ("lookup", {"key": "second"})]
    [answer, first, second] = turn.step_data()
    assert answer == answer_step(
        "", ("call_1", "lookup", '{"key": "first"}'), ("call_2", "lookup", '{"key": "second"}')
    )
    assert [first["tool_call_id"], second["tool_call_id"]] == ["call_1", "call_2"]
    assert turn.answer is not None and turn.answer.data["content"] == "Both."


async def test_a_call_to_an_unknown_tool_is_answered_with_an_error_the_model_reads(
    agent: LLMAgent, http: httpx.AsyncClient
) -> None:
    mark = marker()
    await script(
        http,
        mark,
        {"tool_calls": [{"name": "rm_rf", "arguments": {"path": "/"}, "id": "call_x"}]},
        {"content": "Sorry, I cannot."},
    )
    turn = FakeTurn(f"{mark} clean up")

    await agent.run_turn(turn)

    [_, result] = turn.step_data()
    assert result["content"] == "error: there is no tool named 'rm_rf' (the tools are: none)"
    assert turn.answer is not None and turn.answer.data["content"] == "Sorry, I cannot."
    assert (await sent(http))[1][-1] == tool("call_x", result["content"])


async def test_a_turn_that_keeps_calling_tools_fails_at_the_limit(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    agent = agents(settings_for(tools=BUILTIN), max_llm_calls=2)
    mark = marker()
    again = {"tool_calls": [{"name": "current_time"}]}
    await script(http, mark, again, again, again)
    turn = FakeTurn(f"{mark} loop forever")

    with pytest.raises(TurnFailed) as failed:
        await agent.run_turn(turn)

    assert failed.value.code == "too_many_steps"
    assert len(await recorded(http)) == 2
    # The second answer's calls were not run: their results would never be read.
    assert [step.kind for step in turn.steps] == ["message", "tool_result"]
    assert turn.answer is None


# --- resuming ------------------------------------------------------------------------
@pytest.mark.parametrize("answered_before", [0, 1])
async def test_a_resumed_turn_runs_only_the_missing_tools_then_asks_once(
    settings_for: Callable[..., Settings],
    agents: Callable[..., LLMAgent],
    http: httpx.AsyncClient,
    answered_before: int,
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry())
    mark = marker()
    await script(http, mark, {"content": "Both found."})
    turn = FakeTurn(f"{mark} look up a and b")
    calls = [("call_a", "lookup", '{"key": "a"}'), ("call_b", "lookup", '{"key": "b"}')]
    turn.logged("message", answer_step("Looking.", *calls))  # logged by the owner that died
    if answered_before:
        turn.logged("tool_result", {"tool_call_id": "call_a", "name": "lookup", "content": "A!"})

    await agent.run_turn(turn)

    expected_runs = [{"key": "b"}] if answered_before else [{"key": "a"}, {"key": "b"}]
    assert [arguments for _, arguments in spy.calls] == expected_runs
    results = [data for data in turn.step_data() if "tool_call_id" in data]
    assert [r["tool_call_id"] for r in results] == ["call_a", "call_b"]  # each once
    a_result = "A!" if answered_before else "value of a"
    # Exactly one request: the unfinished step; the logged answer was not asked for again.
    assert await sent(http) == [
        [
            system(),
            user(f"{mark} look up a and b"),
            calling(*calls, content="Looking."),
            tool("call_a", a_result),
            tool("call_b", "value of b"),
        ]
    ]
    assert turn.answer is not None and turn.answer.data["content"] == "Both found."
    assert turn.answer.data["step"] == 3 and turn.streamed(3) == "Both found."


async def test_a_turn_resumed_after_its_tool_results_asks_exactly_once(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry())
    mark = marker()
    await script(http, mark, {"content": "It is 42."})
    turn = FakeTurn(f"{mark} look up x")
    call = ("call_x", "lookup", '{"key": "x"}')
    turn.logged("message", answer_step("", call))
    turn.logged("tool_result", {"tool_call_id": "call_x", "name": "lookup", "content": "42"})

    await agent.run_turn(turn)

    assert spy.calls == []
    assert len(turn.steps) == 2  # nothing logged again
    assert await sent(http) == [
        [system(), user(f"{mark} look up x"), calling(call), tool("call_x", "42")]
    ]
    assert turn.answer is not None and turn.answer.data["content"] == "It is 42."


# --- history -------------------------------------------------------------------------
async def test_the_history_of_earlier_turns_is_sent_valid_and_without_the_noise(
    agent: LLMAgent, http: httpx.AsyncClient
) -> None:
    mark = marker()
    await script(http, mark, {"content": "Noted."})
    t1 = {"turn_id": "a1", "step": 0}
    calc = '{"expression": "2+2"}'
    earlier: list[tuple[Source, str, Mapping[str, Any]]] = [
        # turn a1: a tool round, then an answer
        ("user", "message", {"content": f"{mark} what time is it?", "action_id": "a1"}),
        ("agent", "state", {"state": "running"}),
        ("agent", "message", {**answer_step("", ("t1", "current_time", "{}")), **t1}),
        ("agent", "tool_result", {"tool_call_id": "t1", "name": "current_time", "content": "noon"}),
        ("agent", "message", {"content": "It is noon.", "in_reply_to": "a1", "turn_id": "a1"}),
        ("agent", "state", {"state": "awaiting_user_input"}),
        # turn a2: stopped with one of its two calls answered
        ("user", "message", {"content": "and 2+2, twice?", "action_id": "a2"}),
        (
            "agent",
            "message",
            answer_step("Computing.", ("t2", "calculate", calc), ("t3", "calculate", calc)),
        ),
        ("agent", "tool_result", {"tool_call_id": "t2", "name": "calculate", "content": "4"}),
        ("user", "stop", {"action_id": "s1"}),
        ("agent", "turn_aborted", {"turn_id": "a2", "reason": "stopped"}),
        # turn a3: failed right after asking for a tool, with nothing to say
        ("user", "message", {"content": "and the date?", "action_id": "a3"}),
        ("agent", "message", answer_step("", ("t4", "current_time", "{}"))),
        ("system", "error", {"code": "llm_unavailable", "message": "the LLM server failed (503)"}),
        ("agent", "message", {"content": "", "in_reply_to": "a4"}),  # an empty answer says nothing
        ("system", "timer", {"timer_id": "x", "payload": {}}),
        ("agent", "closed", {"reason": "test"}),
    ]
    turn = FakeTurn("thanks", earlier)

    await agent.run_turn(turn)

    [record] = await recorded(http)
    assert record["status"] == 200, record["error"]  # the fake checks tool answers as OpenAI
    assert record["body"]["messages"] == [
        system(),
        user(f"{mark} what time is it?"),
        calling(("t1", "current_time", "{}")),
        tool("t1", "noon"),
        {"role": "assistant", "content": "It is noon."},
        user("and 2+2, twice?"),
        calling(("t2", "calculate", calc), content="Computing."),  # t3 never answered
        tool("t2", "4"),
        user("and the date?"),  # t4 dropped, and the message with it
        user("thanks"),
    ]


async def test_earlier_turns_are_sent_newest_first_within_the_budget(
    settings_for: Callable[..., Settings],
    agents: Callable[..., LLMAgent],
    http: httpx.AsyncClient,
) -> None:
    agent = agents(settings_for(llm_history_chars=31))
    mark = marker()
    await script(http, mark, {"content": "Noted."})
    calc = '{"expression": "2+2"}'  # with the tool's name, 30 characters
    idle: tuple[Source, str, Mapping[str, Any]] = ("agent", "state", {"state": "idle"})
    earlier: list[tuple[Source, str, Mapping[str, Any]]] = [
        *[idle] * HISTORY_EVENTS,  # a long conversation: only its tail is read
        ("user", "message", {"content": "x" * 40, "action_id": "a1"}),
        ("agent", "message", {**answer_step("", ("t1", "calculate", calc)), "turn_id": "a1"}),
        ("agent", "tool_result", {"tool_call_id": "t1", "name": "calculate", "content": "4"}),
        ("agent", "message", {"content": "It is 4.", "in_reply_to": "a1", "turn_id": "a1"}),
        ("user", "message", {"content": "y" * 20, "action_id": "a2"}),
        ("agent", "message", {"content": "ok", "in_reply_to": "a2", "turn_id": "a2"}),
    ]
    turn = FakeTurn(f"{mark} " + "z" * 100, earlier)  # over the budget alone: sent whole

    await agent.run_turn(turn)

    [record] = await recorded(http)
    assert record["status"] == 200, record["error"]
    # Newest first, 31 characters fit: "ok", the 20 y's, "It is 4." and the result "4";
    # but a result whose call is cut would be refused, so it goes too.
    assert record["body"]["messages"] == [
        system(),
        {"role": "assistant", "content": "It is 4."},
        user("y" * 20),
        {"role": "assistant", "content": "ok"},
        user(f"{mark} " + "z" * 100),
    ]
    assert turn.read_after == turn.message.id - HISTORY_EVENTS - 1 > 0


# --- steering ------------------------------------------------------------------------
async def test_a_message_steered_in_while_a_tool_runs_reaches_the_next_request(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry())
    mark = marker()
    await script(
        http,
        mark,
        {"tool_calls": [{"name": "lookup", "arguments": {"key": "k"}, "id": "call_k"}]},
        {"content": "Done, in French."},
    )
    turn = FakeTurn(f"{mark} look up k")
    steered: list[Event] = []
    spy.hooks["lookup"] = lambda: steered.append(turn.steer("answer in French"))

    await agent.run_turn(turn)

    first, second = await sent(http)
    assert second == [
        *first,
        calling(("call_k", "lookup", '{"key": "k"}')),
        tool("call_k", "value of k"),
        user("answer in French"),
    ]
    assert turn.taken == [steered[0].data["action_id"]]
    assert turn.answer is not None and turn.answer.data["steered"] == turn.taken


async def test_a_steered_message_logged_amid_a_tool_round_comes_after_its_results_once(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    spy = Spy()
    agent = agents(settings_for(), registry=spy.registry())
    mark = marker()
    await script(http, mark, {"content": "ok"})
    turn = FakeTurn(f"{mark} look up k")
    call = ("call_k", "lookup", '{"key": "k"}')
    turn.logged("message", answer_step("", call))
    turn.steer("and be quick")  # in the log before the crash, and still to be taken

    await agent.run_turn(turn)

    assert await sent(http) == [
        [
            system(),
            user(f"{mark} look up k"),
            calling(call),
            tool("call_k", "value of k"),
            user("and be quick"),
        ]
    ]


# --- errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ({"status": 429}, "llm_rate_limited"),
        ({"status": 500}, "llm_unavailable"),
        ({"status": 503, "error": {"message": "overloaded"}}, "llm_unavailable"),
        (
            {"status": 400, "error": {"message": "too long", "code": "context_length_exceeded"}},
            "context_too_long",
        ),
        (  # vLLM says it without OpenAI's code
            {"status": 400, "error": {"message": "This model's maximum context length is 8192"}},
            "context_too_long",
        ),
        ({"status": 400, "error": {"message": "bad 'temperature'"}}, "llm_bad_request"),
        ({"status": 404, "error": {"message": "no model 'gpt-test'"}}, "llm_bad_request"),
        ({"status": 401, "error": {"message": f"Incorrect API key {SECRET}"}}, "llm_bad_request"),
        ({"hang": 30}, "llm_timeout"),  # no answer at all
        ({"content": "a b c", "first_delay": 30}, "llm_timeout"),  # silent after the headers
        ({"content": "one two three four", "fail_after": 2}, "llm_unreachable"),  # cut mid-answer
    ],
)
async def test_each_llm_failure_ends_the_turn_with_its_code(
    settings_for: Callable[..., Settings],
    agents: Callable[..., LLMAgent],
    http: httpx.AsyncClient,
    reply: Record,
    code: str,
) -> None:
    agent = agents(settings_for(llm_timeout=0.5, llm_api_key=SECRET))
    mark = marker()
    await script(http, mark, reply)
    turn = FakeTurn(f"{mark} hello")

    with capture_logs() as logs, pytest.raises(TurnFailed) as failed:
        await agent.run_turn(turn)

    assert failed.value.code == code
    message = failed.value.message
    assert message and "\n" not in message and "Traceback" not in message
    assert SECRET not in message and SECRET not in repr(logs)
    assert "127.0.0.1" not in message  # no internal address shown to the user
    assert turn.answer is None and turn.steps == []
    [line] = [entry for entry in logs if entry["event"] == "llm_failed"]
    assert (line["code"], line["error"]) == (code, message)


async def test_the_sdk_retries_then_the_last_failure_counts(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent], http: httpx.AsyncClient
) -> None:
    agent = agents(settings_for(llm_retries=1))
    mark = marker()
    limited = {"status": 429, "retry_after": 0.01}
    await script(http, mark, {"status": 503, "retry_after": 0.01}, {"content": "made it"})
    await script(http, f"{mark}-2", limited, limited)

    turn = FakeTurn(f"{mark} one")
    await agent.run_turn(turn)
    assert turn.answer is not None and turn.answer.data["content"] == "made it"

    with pytest.raises(TurnFailed) as failed:
        await agent.run_turn(FakeTurn(f"{mark}-2 two"))
    assert failed.value.code == "llm_rate_limited"
    assert "after 1 retries" in failed.value.message
    assert [r["status"] for r in await recorded(http)] == [503, 200, 429, 429]


async def test_a_server_nobody_listens_on_is_unreachable(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent]
) -> None:
    agent = agents(settings_for(llm_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(TurnFailed) as failed:
        await agent.run_turn(FakeTurn("hello"))
    assert failed.value.code == "llm_unreachable"
    assert failed.value.message == "cannot connect to the LLM server"


# --- cancellation --------------------------------------------------------------------
@pytest.mark.parametrize("when", ["mid_stream", "before_headers"])
async def test_cancelling_a_turn_closes_its_request(
    agent: LLMAgent, http: httpx.AsyncClient, when: str
) -> None:
    mark = marker()
    words = " ".join(f"w{i}" for i in range(200))
    reply = {"content": words, "delay": 0.05} if when == "mid_stream" else {"hang": 60}
    await script(http, mark, reply)
    turn = FakeTurn(f"{mark} talk")
    task = asyncio.create_task(agent.run_turn(turn))

    async def asked() -> list[Record] | None:
        return (await recorded(http)) or None

    if when == "mid_stream":
        await wait_for_event(turn.first_delta, task)
    else:
        await until(asked)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def left() -> Record | None:
        [record] = await recorded(http)
        return record if record["finished_at"] else None

    record = await until(left)  # 200 words take 10 s: only a closed connection ends it sooner
    assert record["disconnected"] and not record["completed"]
    assert record["chunks_sent"] < 100
    assert turn.answer is None and turn.steps == []


# --- configuration -------------------------------------------------------------------
async def test_the_api_key_or_a_placeholder_goes_to_the_sdk(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent]
) -> None:
    assert agents(settings_for()).client.api_key == NO_KEY
    keyed = agents(settings_for(llm_api_key=SECRET, llm_timeout=3.5, llm_retries=4))
    assert keyed.client.api_key == SECRET
    assert (keyed.client.timeout, keyed.client.max_retries) == (3.5, 4)


async def test_conversations_share_the_client_of_their_settings(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent]
) -> None:
    # Building a client costs an SSL context: not one per conversation.
    one, two = agents(settings_for()), agents(settings_for())
    assert one.client is two.client
    assert agents(settings_for(llm_model="other")).client is one.client
    assert agents(settings_for(llm_api_key=SECRET)).client is not one.client
    closing = one.client
    await close_clients()
    assert closing.is_closed() and one.client is not closing


def test_fleet_tools_names_the_registry(
    settings_for: Callable[..., Settings], agents: Callable[..., LLMAgent]
) -> None:
    assert agents(settings_for()).registry.names == []
    assert agents(settings_for(tools=BUILTIN)).registry.names == ["current_time", "calculate"]
