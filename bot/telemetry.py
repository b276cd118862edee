"""Set up logs and traces for one process: called by the entry points only.

Logs: ``LOG_FORMAT=text`` (the default) or ``json``, one object a line with the
thread and request ids the line is about (``bot.engine.tracing`` keeps them in
contextvars) and the trace it belongs to. Traces: the OpenTelemetry SDK, with
OTLP export over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
``greenlight[otlp]`` extra); without it, no SDK is installed and every span is a
no-op, so tracing costs nothing unless it goes somewhere.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from bot.domain.errors import ConfigError
from bot.engine import tracing
from bot.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LIBRARY_LEVELS = {"httpx": logging.WARNING}
"""Libraries' loggers kept at these levels whatever ``LOG_LEVEL`` says: httpx logs each
request's whole URL at INFO, and a webhook's callback URL may carry a secret in its path or
query (Greenlight's own lines name only its scheme, host and port)."""


class WithIds(logging.Filter):
    """Puts the thread, request and trace a record is about on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.thread_id = tracing.thread_id.get()
        record.request_id = tracing.request_id.get()
        context = trace.get_current_span().get_span_context()
        record.trace_id = f"{context.trace_id:032x}" if context.is_valid else None
        record.span_id = f"{context.span_id:016x}" if context.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the ids where known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("thread_id", "request_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_handler(settings: Settings, stream: Any = None) -> logging.Handler:
    """A handler writing ``settings.log_format`` lines, with the ids, to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(WithIds())
    is_json = settings.log_format == "json"
    handler.setFormatter(JsonFormatter() if is_json else logging.Formatter(TEXT_FORMAT))
    return handler


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once for this process (its level and format)."""
    logging.basicConfig(level=settings.log_level, handlers=[log_handler(settings)], force=True)
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    # What neither format shows, a record need not look up: the process and thread, and the
    # caller's file and line (a walk up the stack). About 2 of a line's 9.5 us; the logging
    # HOWTO ("Optimization") names these switches.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


def tracer_provider(
    settings: Settings, process: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The SDK's provider, exporting to ``exporter`` or to the configured OTLP endpoint.

    None when neither is there: nothing would see the spans.

    Raises:
        ConfigError: an endpoint is set but the OTLP exporter is not installed.
    """
    if exporter is None and settings.otel_exporter_otlp_endpoint:
        exporter = _otlp(settings.otel_exporter_otlp_endpoint)
    if exporter is None:
        return None
    resource = Resource.create(
        {"service.name": settings.otel_service_name, "greenlight.process": process}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(settings: Settings, process: str) -> TracerProvider | None:
    """Install the SDK for this process when traces are exported; the caller shuts it down."""
    provider = tracer_provider(settings, process)
    if provider is not None:
        trace.set_tracer_provider(provider)
        logging.getLogger(__name__).info("traces: OTLP to %s", settings.otel_exporter_otlp_endpoint)
    return provider


def _otlp(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'greenlight[otlp]'"
        ) from exc
    # The generic endpoint is the collector's root; traces go to /v1/traces under it.
    # Its headers (OTEL_EXPORTER_OTLP_HEADERS) the exporter reads from the environment.
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    return exporter
