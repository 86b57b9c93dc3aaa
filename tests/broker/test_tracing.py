"""Tracing: one trace from a client's action through the gateway, the broker (the
trace context in the AMQP message's headers), the worker, the turn and its LLM call;
and tracing stays off unless the standard OTEL_* variables turn it on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker import tracing
from broker.settings import Settings
from fleet.fake_llm.server import FakeLLM
from tests.conftest import InProcessFleet
from tests.llm import llm_agent, serving
from tests.support import Client, create_conversation, replied_to, token

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def traced() -> Iterator[None]:
    """The SDK with an in-memory exporter, as OTEL_* variables would install one (a
    process has one tracer provider: the first set stays; later tests' spans are
    dropped once the exporter is shut down)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield
    EXPORTER.shutdown()


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with serving(500.0) as server:
        yield server


async def test_an_action_is_one_trace_from_gateway_to_llm(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM
) -> None:
    fleet.settings = settings.model_copy(update=llm_agent(fake_llm))
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    EXPORTER.clear()
    await client.act("trace me", action_id="traced")
    await client.wait_for(replied_to("traced"))
    await client.close()

    spans = EXPORTER.get_finished_spans()
    action = one(spans, "fleet.action", lambda s: attribute(s, "fleet.action_id") == "traced")
    assert action.context is not None
    trace_id = action.context.trace_id
    ours = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    delivered = one(ours, "fleet.input")
    turn = one(ours, "fleet.turn")
    chat = one(ours, "llm.chat")
    assert action.kind == trace.SpanKind.SERVER
    assert attribute(action, "fleet.conversation_id") == cid
    assert delivered.kind == trace.SpanKind.CONSUMER
    assert delivered.parent is not None and delivered.parent.span_id == action.context.span_id
    assert delivered.context is not None and turn.context is not None
    assert turn.parent is not None and turn.parent.span_id == delivered.context.span_id
    assert attribute(turn, "fleet.turn_id") == "traced"
    assert chat.parent is not None and chat.parent.span_id == turn.context.span_id
    assert chat.kind == trace.SpanKind.CLIENT
    assert attribute(chat, "gen_ai.request.model") == "fleet-fake"


def one(
    spans: Sequence[ReadableSpan], name: str, match: Callable[[ReadableSpan], bool] = bool
) -> ReadableSpan:
    found = [s for s in spans if s.name == name and match(s)]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


def attribute(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def test_nothing_traced_adds_no_header() -> None:
    assert tracing.inject() == {}
    assert tracing.extract({}) is None
    assert tracing.extract({"x-other": "1"}) is None


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
            False,
        ),
    ],
)
def test_the_otel_variables_turn_tracing_on(env: dict[str, str], enabled: bool) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = "from broker import tracing; print(tracing.configure('worker'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == str(enabled)
