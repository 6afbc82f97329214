"""Gemini through google-genai's async client, as a `Model`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from durable.ai._model import (
    RETRYABLE_STATUS,
    ModelRequestError,
    ModelUnavailableError,
    TextSink,
)
from durable.ai._types import (
    Content,
    FunctionCall,
    ModelRequest,
    ModelResponse,
    Part,
    Usage,
)

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"

_TRANSIENT_NAMES = frozenset(
    {
        "TransportError",  # httpx / httpx2: connect, read, write, protocol, timeouts
        "TimeoutException",
        "ClientConnectionError",  # aiohttp
        "ServerTimeoutError",
    }
)


class Gemini:
    """A Gemini model, called with `client.aio.models.generate_content`.

    The key stays here, in the worker's memory: history records only requests and
    responses. google-genai's own retries are left off; the activity's `RetryPolicy`
    retries instead, on durable timers.

    Args:
        model: the Gemini model id.
        api_key: the key; default `GEMINI_API_KEY` (or `GOOGLE_API_KEY`) from the
            environment, read when the first call is made.
        base_url: another endpoint (a proxy, or a local scripted server in tests).
        client: a ready `google.genai.Client` (then `api_key` and `base_url` are unused).
        timeout: seconds one HTTP request may take.
    """

    def __init__(
        self,
        model: str = DEFAULT_GEMINI_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: genai.Client | None = None,
        timeout: float | None = 120.0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self._client = client
        self._timeout = timeout

    def __repr__(self) -> str:  # never shows the key
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"Gemini({self.model!r}{where})"

    def _genai(self) -> genai.Client:
        if self._client is None:
            try:
                from google import genai  # noqa: PLC0415 - the `genai` extra is optional
                from google.genai import types  # noqa: PLC0415
            except ImportError as e:
                raise ImportError(
                    "durable.ai.Gemini needs google-genai: pip install 'durable-sdk[genai]'"
                ) from e
            key = (
                self._api_key
                or os.environ.get("GEMINI_API_KEY")
                or os.environ.get("GOOGLE_API_KEY")
            )
            if not key:
                raise ModelRequestError(
                    "no Gemini API key: set GEMINI_API_KEY in the worker's environment or "
                    "pass Gemini(api_key=...)"
                )
            options = types.HttpOptions(
                base_url=self.base_url,
                timeout=None if self._timeout is None else int(self._timeout * 1000),
            )
            self._client = genai.Client(api_key=key, http_options=options)
        return self._client

    async def generate(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        """Call Gemini; see `Model.generate`.

        Raises:
            ModelUnavailableError: HTTP 408, 429 or 5xx, or no connection (retried).
            ModelRequestError: any other HTTP 4xx, or a blocked prompt (not retried).
        """
        client = self._genai()
        # (plain dicts of google-genai's ContentDict shape; the SDK validates them)
        contents: list[Any] = [_content_dict(c) for c in request.contents]
        config = _config(request)
        try:
            if on_text is None:
                answer = await client.aio.models.generate_content(
                    model=self.model, contents=contents, config=config
                )
                return _response(answer)
            pieces = []
            stream = await client.aio.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
            async for piece in stream:
                pieces.append(piece)
                text = _text_of(piece)
                if text:
                    await on_text(text)
            return _merge(pieces)
        except Exception as e:
            raise _model_error(e) from None


def _model_error(e: Exception) -> Exception:
    from google.genai import errors  # noqa: PLC0415

    if isinstance(e, errors.APIError):
        message = f"Gemini returned {e.code} {e.status or ''}: {e.message or e.details}".replace(
            "  ", " "
        )
        if e.code in RETRYABLE_STATUS or e.code >= 500:
            return ModelUnavailableError(message, e.code)
        return ModelRequestError(message, e.code)
    if isinstance(e, ConnectionError | TimeoutError) or any(
        t.__name__ in _TRANSIENT_NAMES for t in type(e).__mro__
    ):
        return ModelUnavailableError(f"Gemini could not be reached: {type(e).__name__}: {e}")
    return e


def _part_dict(p: Part) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.text is not None:
        out["text"] = p.text
    if p.thought:
        out["thought"] = True
    if p.thought_signature is not None:
        out["thought_signature"] = p.thought_signature
    if p.function_call is not None:
        call: dict[str, Any] = {"name": p.function_call.name, "args": p.function_call.args}
        if p.function_call.id is not None:
            call["id"] = p.function_call.id
        out["function_call"] = call
    if p.function_response is not None:
        resp: dict[str, Any] = {
            "name": p.function_response.name,
            "response": p.function_response.response,
        }
        if p.function_response.id is not None:
            resp["id"] = p.function_response.id
        out["function_response"] = resp
    return out


def _content_dict(c: Content) -> dict[str, Any]:
    return {"role": c.role, "parts": [_part_dict(p) for p in c.parts]}


def _config(request: ModelRequest) -> types.GenerateContentConfig:
    from google.genai import types  # noqa: PLC0415

    tools = None
    if request.tools:
        declarations = [
            types.FunctionDeclaration(
                name=t.name,
                description=t.description or None,
                parameters_json_schema=t.parameters or None,
            )
            for t in request.tools
        ]
        tools = [types.Tool(function_declarations=declarations)]
    return types.GenerateContentConfig(
        system_instruction=request.system_instruction,
        temperature=request.temperature,
        max_output_tokens=request.max_output_tokens,
        tools=tools,  # type: ignore[arg-type]  # a list of Tool is one of the accepted forms
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        response_mime_type="application/json" if request.response_json_schema else None,
        response_json_schema=request.response_json_schema,
    )


def _parts(answer: types.GenerateContentResponse) -> list[Part]:
    if not answer.candidates:
        return []
    content = answer.candidates[0].content
    out = []
    for p in (content.parts if content is not None else None) or []:
        call = None
        if p.function_call is not None:
            call = FunctionCall(
                name=p.function_call.name or "",
                args=dict(p.function_call.args or {}),
                id=p.function_call.id,
            )
        if p.text is None and call is None and p.thought_signature is None:
            continue  # kinds the conversation does not carry (inline data, code, ...)
        out.append(
            Part(
                text=p.text,
                function_call=call,
                thought=bool(p.thought),
                thought_signature=p.thought_signature,
            )
        )
    return out


def _text_of(piece: types.GenerateContentResponse) -> str:
    return "".join(p.text for p in _parts(piece) if p.text and not p.thought)


def _usage(answer: types.GenerateContentResponse) -> Usage:
    meta = answer.usage_metadata
    if meta is None:
        return Usage()
    prompt = meta.prompt_token_count or 0
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(
        input_tokens=prompt, output_tokens=output, total_tokens=meta.total_token_count or 0
    )


def _finish(answer: types.GenerateContentResponse) -> str | None:
    if not answer.candidates:
        return None
    reason = answer.candidates[0].finish_reason
    return None if reason is None else str(getattr(reason, "value", reason))


def _response(answer: types.GenerateContentResponse) -> ModelResponse:
    feedback = answer.prompt_feedback
    if not answer.candidates and feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise ModelRequestError(f"Gemini blocked the prompt: {reason}")
    return ModelResponse(
        content=Content(role="model", parts=tuple(_parts(answer))),
        finish_reason=_finish(answer),
        usage=_usage(answer),
        model_version=answer.model_version,
    )


def _merge(pieces: list[types.GenerateContentResponse]) -> ModelResponse:
    # A streamed answer arrives as many small responses: join neighbouring text parts.
    parts: list[Part] = []
    for piece in pieces:
        for p in _parts(piece):
            last = parts[-1] if parts else None
            if (
                last is not None
                and p.text is not None
                and last.text is not None
                and p.function_call is None
                and last.function_call is None
                and p.thought == last.thought
                and p.thought_signature is None
            ):
                parts[-1] = Part(
                    text=last.text + p.text,
                    thought=last.thought,
                    thought_signature=last.thought_signature,
                )
            else:
                parts.append(p)
    final = pieces[-1] if pieces else None
    if final is None:
        return ModelResponse(content=Content(role="model"))
    return ModelResponse(
        content=Content(role="model", parts=tuple(parts)),
        finish_reason=next((f for f in map(_finish, reversed(pieces)) if f), None),
        usage=next((u for u in map(_usage, reversed(pieces)) if u.total_tokens), Usage()),
        model_version=final.model_version,
    )
