"""Traces and the ids every log line and span carries (OpenTelemetry's API only).

The SDK, its exporters and the log format are set up by the entry points
(``bot.telemetry``); without them every span here is a no-op. A trace crosses
the queue in the queue entry: the writer that queues a thread puts its
``traceparent`` (W3C, 55 characters) beside the thread id, and the worker that
takes the entry steps the thread as a child of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NoOpTracerProvider, ProxyTracerProvider, Span
from opentelemetry.util.types import Attributes

tracer = trace.get_tracer("greenlight")

THREAD_ID = "greenlight.thread_id"
REQUEST_ID = "greenlight.request_id"
"""Span attribute names of the ids."""

thread_id: ContextVar[str | None] = ContextVar("thread_id", default=None)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The thread and the request this task works on, when known: for log lines."""


def bind(*, thread: str | None = None, request: str | None = None) -> None:
    """Name the thread (and request) this task works on, for its logs and its current span."""
    if thread is not None:
        thread_id.set(thread)
    if request is not None:
        request_id.set(request)
    if not recording():  # the current span is a no-op: nothing to name on it
        return
    span = trace.get_current_span()
    if thread is not None:
        span.set_attribute(THREAD_ID, thread)
    if request is not None:
        span.set_attribute(REQUEST_ID, request)


@contextlib.contextmanager
def bound(*, thread: str | None = None, request: str | None = None) -> Iterator[None]:
    """Like ``bind``, undone on the way out (for code that works on several threads in turn)."""
    tokens = (thread_id.set(thread), request_id.set(request))
    try:
        bind(thread=thread, request=request)
        yield
    finally:
        thread_id.reset(tokens[0])
        request_id.reset(tokens[1])


_NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)
_ASK = object()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""The API loads a provider named there on its first ``get_tracer_provider``."""
_SKIPPED = contextlib.nullcontext(INVALID_SPAN)
"""Stateless, so one serves every skipped span."""


def recording() -> bool:
    """Whether an SDK provider is set: without one every span is a no-op that
    ``span`` skips (creating and entering one costs about 10 µs, several per step).

    The API's global is read directly when it is there: ``get_tracer_provider`` looks
    the environment up on every call until a provider is set (a few µs, per span)."""
    provider = getattr(trace, "_TRACER_PROVIDER", _ASK)
    if provider is _ASK or (provider is None and _PROVIDER_FROM_ENV):
        provider = trace.get_tracer_provider()  # another API version, or one to load
    return provider is not None and not isinstance(provider, _NO_SDK)


def span(
    name: str,
    *,
    context: Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> contextlib.AbstractContextManager[Span]:
    """``tracer.start_as_current_span``, skipped when no SDK would record it.

    Skipping changes nothing a caller sees: without an SDK a span is the parent's
    context again, and the current span already is that. A ``context`` (a queued
    ``traceparent``) is always attached, so the trace still crosses this process.
    """
    if context is None and not recording():
        return _SKIPPED
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def traceparent() -> str:
    """The current span as a W3C ``traceparent``; empty when nothing is traced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return ""  # what inject would leave: nothing to propagate
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def from_traceparent(value: str) -> Context | None:
    """The context a queued ``traceparent`` names, to step the thread as its child."""
    return propagate.extract({"traceparent": value}) if value else None
