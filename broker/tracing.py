"""Optional OpenTelemetry tracing: one trace from a client's action through the
gateway, the broker (W3C trace context in the AMQP message's headers), the worker, the
agent's turn and its LLM calls.

Off unless the standard variables ask for it: ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``console``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
the SDK then reads the rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, the
exporter's endpoint and headers). Off (no tracer provider installed, by ``configure``
or by the program around it), a span here is nothing at all: the hot path pays a
function call, and no header is added to a message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

log = structlog.get_logger()

_tracer = trace.get_tracer("agent-fleet")

Kind = SpanKind


def configure(service: str) -> bool:
    """Install the SDK's tracer provider if the environment asks for tracing (at a
    process's start); whether it did. ``service`` names the process's role."""
    env = os.environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "")
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter == "none":
        return False
    if not exporter and not endpoint:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        log.warning("tracing_unavailable", reason="install the 'tracing' extra")
        return False
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("tracing_unavailable", reason="install the 'tracing' extra")
            return False
        span_exporter = OTLPSpanExporter()
    defaults = {"service.name": f"fleet-{service}", "fleet.role": service}
    provider = TracerProvider(resource=Resource.create(defaults).merge(Resource.create()))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing_enabled", exporter=exporter or "otlp")
    return True


def _on() -> bool:
    """Whether a tracer provider is installed. Without one, OpenTelemetry's no-op span
    still switched the current context in and out: about 2 % of a gateway's time."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, str | int | float | bool],
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
) -> Iterator[Span]:
    """A span, current in this block (and in tasks created in it)."""
    if not _on():
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes)
    ) as current:
        yield current


def inject() -> dict[str, Any]:
    """The current trace context as message headers (``traceparent``, ...): empty when
    nothing is traced."""
    if not _on() or not trace.get_current_span().get_span_context().is_valid:
        return {}
    headers: dict[str, Any] = {}
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, Any] | None) -> Context | None:
    """The trace context a message carries, to continue its trace (None: none)."""
    if not headers or "traceparent" not in headers:
        return None
    return propagate.extract({k: str(v) for k, v in headers.items()})
