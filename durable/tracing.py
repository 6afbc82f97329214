"""OpenTelemetry spans for orchestrations and activities (the `otel` extra).

With `opentelemetry-api` installed and a tracer provider configured (the SDK, an exporter),
durable records:

- `schedule NAME` (producer) when a client schedules an orchestration, a child of the
  caller's current span, if any;
- `orchestration NAME` for each decision an orchestration makes: a replay of history
  makes none, so a crash and a replay add no spans for the steps already taken;
- `activity NAME` (consumer) for each attempt of an activity, current while it runs, so
  that the spans of what it calls (an HTTP client, google-genai) nest under it. A failed
  attempt has status ERROR and the exception recorded.

The trace context travels with the work: an orchestration's start event records the
`traceparent` of the span that scheduled it; each decision's span is its child, and the
activities and child orchestrations a decision starts carry that decision's context,
whichever worker or machine runs them. One agent run, children and retries included, is
one trace. A `continue_as_new` keeps the trace.

Without OpenTelemetry, or with no tracer provider set, none of this costs more than a
check per step, and nothing is recorded in history.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

try:
    from opentelemetry import trace as _trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _ENABLED = True
except ImportError:  # pragma: no cover - the extra is not installed
    _ENABLED = False

__all__ = ["Attributes", "Step", "step"]

Kind = Literal["internal", "producer", "consumer"]
Attributes = Mapping[str, str | int | bool]
_TRACER_NAME = "durable"


class Step:
    """The span of one step, as durable uses it: its context to pass on, attributes to
    add, a failure to record. A stand-in that does nothing without OpenTelemetry."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, span: Any = None, traceparent: str | None = None) -> None:
        self._span = span
        self.traceparent = traceparent
        """The W3C `traceparent` of this span; None if nothing is recorded."""

    def set(self, key: str, value: str | int | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error: BaseException) -> None:
        """Mark the step failed (the error is recorded on the span)."""
        if self._span is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


_NOTHING = Step()


def step(
    name: str,
    parent: str | None,
    kind: Kind,
    attributes: Attributes,
    *,
    detached: bool = False,
) -> contextlib.AbstractContextManager[Step]:
    """A span for one step, current while the block runs.

    Args:
        name: the span's name.
        parent: the `traceparent` the work carries; None: the current span's child (if any).
        kind: the span kind.
        attributes: set on the span.
        detached: with no `parent`, start a new trace rather than follow the current span
            (a worker's: work from before tracing, or from an untraced client).
    """
    tracer = _tracer()
    if tracer is None:  # nothing records: pass on the context the work was given
        return _Passing(_NOTHING if parent is None else Step(None, parent))
    return _span(tracer, name, parent, kind, attributes, detached)


class _Passing(contextlib.AbstractContextManager[Step]):
    __slots__ = ("_step",)

    def __init__(self, step: Step) -> None:
        self._step = step

    def __enter__(self) -> Step:
        return self._step

    def __exit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def _span(  # noqa: PLR0917 - step's arguments, passed on
    tracer: Any,
    name: str,
    parent: str | None,
    kind: Kind,
    attributes: Attributes,
    detached: bool,
) -> Iterator[Step]:
    context = None
    if parent is not None:
        context = _PROPAGATOR.extract({"traceparent": parent})
    elif detached:
        context = Context()
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=_KINDS[kind],
        attributes=dict(attributes),
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        # (a span that is not recorded still passes on the context it was given)
        valid = span.get_span_context().is_valid
        yield Step(span if span.is_recording() else None, _traceparent(span) if valid else None)


_TRACER: Any = None
"""The tracer to use whatever the global provider is (tests set it)."""
_CACHED: tuple[float, Any] = (-1.0, None)
_RECHECK = 1.0
"""Seconds between looks at the global provider (a look costs more than a step)."""


def _tracer() -> Any:
    """durable's tracer; None while no tracer provider is set (the default: nothing records).
    A provider set later is seen within `_RECHECK` seconds."""
    global _CACHED  # noqa: PLW0603 - the provider's tracer, kept between looks
    if _TRACER is not None or not _ENABLED:
        return _TRACER
    now = time.monotonic()
    if now - _CACHED[0] < _RECHECK:
        return _CACHED[1]
    provider = _trace.get_tracer_provider()
    proxy = isinstance(provider, _trace.ProxyTracerProvider)
    _CACHED = (now, None if proxy else provider.get_tracer(_TRACER_NAME))
    return _CACHED[1]


def _traceparent(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=_trace.set_span_in_context(span))
    return carrier.get("traceparent")


if _ENABLED:
    _PROPAGATOR = TraceContextTextMapPropagator()
    _KINDS = {
        "internal": SpanKind.INTERNAL,
        "producer": SpanKind.PRODUCER,
        "consumer": SpanKind.CONSUMER,
    }
