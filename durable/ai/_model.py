"""Model calls as activities: the `Model` protocol, its errors, and the orchestrator's side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from durable.ai._types import Content, FunctionDeclaration, ModelRequest, ModelResponse, user
from durable.core.context import ActivityContext, OrchestrationContext
from durable.core.errors import DurableError
from durable.core.tasks import CompletableTask, RetryPolicy

TextSink = Callable[[str], Awaitable[None]]
"""Receives the text of an answer piece by piece as the model produces it."""


class ModelError(DurableError):
    """A model call failed."""


class ModelUnavailableError(ModelError):
    """The provider could not answer now (HTTP 408, 429, 5xx, or no connection): retried.

    Attributes:
        code: the HTTP status, or None when no response came.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ModelRequestError(ModelError):
    """The provider refused the request (HTTP 4xx other than 408 and 429): not retried.

    Attributes:
        code: the HTTP status.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


for _error in (ModelError, ModelUnavailableError, ModelRequestError):
    _error.__module__ = "durable.ai"

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses a model call is retried after."""

DEFAULT_MODEL_RETRY = RetryPolicy(
    first_retry_interval=timedelta(seconds=2),
    max_number_of_attempts=8,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(minutes=2),
    non_retryable_error_types=(ModelRequestError,),
)
"""Retries on durable timers: 2 s, 4 s, 8 s, ... up to 2 min, 8 attempts in all; a refused
request (`ModelRequestError`) fails at once."""


@runtime_checkable
class Model(Protocol):
    """Anything that answers a `ModelRequest`: Gemini, another provider, a scripted stand-in.

    A model lives in the worker's configuration, never in history: only the request and
    the response are recorded. Raise `ModelUnavailableError` for failures worth retrying
    and `ModelRequestError` for requests that will never succeed.
    """

    async def generate(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        """Answer `request`; if `on_text` is given, pass it the answer's text as it arrives."""
        ...


ACTIVITY_PREFIX = "durable.ai.model."


def activity_name(alias: str) -> str:
    """The name of the activity that calls the model registered as `alias`."""
    return ACTIVITY_PREFIX + alias


def model_activity(alias: str, model: Model) -> Callable[..., Awaitable[ModelResponse]]:
    """The activity that answers requests for `alias` with `model`.

    Args:
        alias: the name orchestrators use (`ModelRequest.model`).
        model: the model; it keeps its own credentials.
    """
    if not alias or not isinstance(alias, str):
        raise ValueError("a model alias must be a non-empty string")
    if not isinstance(model, Model):
        raise TypeError(f"{model!r} is not a Model: it needs `async def generate(request, ...)`")

    async def call_model(ctx: ActivityContext, request: ModelRequest) -> ModelResponse:
        sink: TextSink | None = None
        if request.stream is not None:
            sink = ctx.stream(request.stream).write
        return await model.generate(request, sink)

    call_model.__name__ = call_model.__qualname__ = activity_name(alias)
    return call_model


def model_activities(models: Mapping[str, Model]) -> list[Callable[..., Any]]:
    """One activity per model alias (see `model_activity`)."""
    return [model_activity(alias, m) for alias, m in models.items()]


Prompt = str | Content | Sequence[Content]


def request(
    prompt: Prompt,
    *,
    model: str = "default",
    system: str | None = None,
    tools: Sequence[FunctionDeclaration] = (),
    json_schema: dict[str, Any] | None = None,
    temperature: float | None = None,
    max_output_tokens: int | None = None,
    stream: str | None = None,
) -> ModelRequest:
    """Build a `ModelRequest` from a prompt (text, one message, or a conversation)."""
    if isinstance(prompt, str):
        contents: tuple[Content, ...] = (user(prompt),)
    elif isinstance(prompt, Content):
        contents = (prompt,)
    else:
        contents = tuple(prompt)
    if not contents:
        raise ValueError("a model request needs at least one message")
    return ModelRequest(
        contents=contents,
        model=model,
        system_instruction=system,
        tools=tuple(tools),
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        response_json_schema=json_schema,
        stream=stream,
    )


def generate(
    ctx: OrchestrationContext,
    prompt: Prompt | ModelRequest,
    *,
    model: str = "default",
    system: str | None = None,
    tools: Sequence[FunctionDeclaration] = (),
    json_schema: dict[str, Any] | None = None,
    temperature: float | None = None,
    max_output_tokens: int | None = None,
    stream: str | None = None,
    retry_policy: RetryPolicy | None = DEFAULT_MODEL_RETRY,
) -> CompletableTask[ModelResponse]:
    """Call a model from an orchestrator: `response = yield ai.generate(ctx, "...")`.

    The call is an activity: once its response is in history it is never made again,
    whatever happens to the worker.

    Args:
        ctx: the orchestration context.
        prompt: text, a message, a conversation, or a whole `ModelRequest`.
        model: the alias of a model registered on the workers.
        system: the system instruction.
        tools: function declarations the model may call.
        json_schema: ask for JSON that fits this schema (read it with `response.json()`).
        temperature: sampling temperature.
        max_output_tokens: a cap on the answer's length.
        stream: an orchestration stream to write the text to as it arrives.
        retry_policy: how failed calls are retried (default `DEFAULT_MODEL_RETRY`).

    Returns:
        A task whose result is the `ModelResponse`.
    """
    if isinstance(prompt, ModelRequest):
        req = prompt
    else:
        req = request(
            prompt,
            model=model,
            system=system,
            tools=tools,
            json_schema=json_schema,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            stream=stream,
        )
    return ctx.call_activity(
        activity_name(req.model), input=req, retry_policy=retry_policy, return_type=ModelResponse
    )
