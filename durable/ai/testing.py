"""A scripted Gemini-compatible HTTP server on localhost, for tests and offline examples.

google-genai's real client talks to it (`Gemini(base_url=server.url)`), so everything
between an orchestration and the wire is exercised; only the answers are scripted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from durable.ai._gemini import DEFAULT_GEMINI_MODEL, Gemini
from durable.ai._types import (
    Content,
    FunctionCall,
    FunctionDeclaration,
    FunctionResponse,
    ModelRequest,
    ModelResponse,
    Part,
    Usage,
)

_PATH = re.compile(
    r"^/[^/]+/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"
)


@dataclass(frozen=True, slots=True)
class Fail:
    """A scripted error reply: an HTTP status with a Gemini-style error body."""

    code: int
    message: str = "scripted failure"

    @property
    def status(self) -> str:
        return _STATUS_NAMES.get(self.code, "UNKNOWN")


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

Reply = ModelResponse | Fail | str
"""What a script answers: a response, an error, or plain text (a one-part answer)."""

Script = Callable[["Call"], Reply]
"""Answers one call; runs on the server's thread for that request."""


@dataclass(slots=True)
class Call:
    """One request the server received.

    Attributes:
        index: its place among all requests, from 0.
        at: when it arrived (wall-clock seconds).
        model: the model id in the URL.
        stream: whether it was a streaming request.
        request: the request, as a `ModelRequest` (its `model` is the URL's model id).
        api_key: the `x-goog-api-key` header it carried.
        body: the JSON body as sent.
        status: the HTTP status answered (set once answered).
    """

    index: int
    at: float
    model: str
    stream: bool
    request: ModelRequest
    api_key: str | None
    body: dict[str, Any]
    status: int = 0

    @property
    def prompt(self) -> str:
        """The text of the last user message."""
        users = [c for c in self.request.contents if c.role == "user"]
        return users[-1].text if users else ""

    @property
    def system(self) -> str:
        """The system instruction, or ''."""
        return self.request.system_instruction or ""

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools offered."""
        return [t.name for t in self.request.tools]

    @property
    def function_responses(self) -> list[FunctionResponse]:
        """The function responses in the last message."""
        last = self.request.contents[-1] if self.request.contents else None
        if last is None:
            return []
        return [p.function_response for p in last.parts if p.function_response is not None]


def reply(text: str, *, tokens: int | None = None) -> ModelResponse:
    """A text answer."""
    usage = Usage() if tokens is None else Usage(total_tokens=tokens, output_tokens=tokens)
    return ModelResponse(content=Content(role="model", parts=(Part(text=text),)), usage=usage)


def call_tools(*calls: tuple[str, dict[str, Any]], text: str | None = None) -> ModelResponse:
    """An answer asking for tool calls: `call_tools(("get_weather", {"city": "Oslo"}))`."""
    parts = [Part(text=text)] if text else []
    parts += [Part(function_call=FunctionCall(name=n, args=a)) for n, a in calls]
    return ModelResponse(content=Content(role="model", parts=tuple(parts)))


@dataclass(slots=True)
class _Queue:
    failures: list[Fail] = field(default_factory=list)


class ScriptedGemini:
    """A Gemini-compatible server on 127.0.0.1 whose answers come from `script`.

    Use it as a context manager (or `start()` / `stop()`); `url` is its base URL.

    Args:
        script: answers each call (default: echoes the prompt).
        stream_chunk: characters per chunk of a streamed text answer.
        delay: seconds to wait before each answer.
        port: the port (0: any free port).
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        stream_chunk: int = 8,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self.script: Script = script or (lambda c: reply(f"echo: {c.prompt}"))
        self.stream_chunk = stream_chunk
        self.delay = delay
        self.calls: list[Call] = []
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue = _Queue()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> ScriptedGemini:
        """Start serving in a background thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else small replies stall on delayed ACKs

            def do_POST(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits for one poll
            name="scripted-gemini",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give `Gemini(base_url=...)`."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting -------------------------------------------------------------------

    def fail_next(self, count: int, code: int = 429, message: str = "scripted failure") -> None:
        """Answer the next `count` calls with HTTP `code`, whatever the script says."""
        with self._lock:
            self._queue.failures.extend(Fail(code, message) for _ in range(count))

    def reset(self) -> None:
        """Forget every call and every queued failure (the script stays)."""
        with self._lock:
            self.calls.clear()
            self._queue.failures.clear()

    def wait_for_calls(self, count: int, timeout: float = 30.0) -> list[Call]:
        """Block until at least `count` calls have arrived; returns them all.

        Raises:
            TimeoutError: fewer came within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.calls)} calls arrived, wanted {count}")
                self._changed.wait(left)
            return list(self.calls)

    # -- serving ---------------------------------------------------------------------

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("content-length") or 0)
        raw = http.rfile.read(length)
        match = _PATH.match(http.path)
        try:
            body = json.loads(raw or b"{}")
            request = parse_request(body, match["model"] if match else "")
        except (ValueError, msgspec.ValidationError) as e:
            _send_json(http, 400, _error_body(Fail(400, f"malformed request: {e}")))
            return
        if match is None:
            _send_json(http, 404, _error_body(Fail(404, f"no such method: {http.path}")))
            return
        with self._changed:
            call = Call(
                index=len(self.calls),
                at=time.time(),
                model=match["model"],
                stream=match["method"] == "streamGenerateContent",
                request=request,
                api_key=http.headers.get("x-goog-api-key"),
                body=body,
            )
            self.calls.append(call)
            queued = self._queue.failures.pop(0) if self._queue.failures else None
            self._changed.notify_all()
        if self.delay:
            time.sleep(self.delay)
        answer: Reply
        try:
            answer = queued if queued is not None else self.script(call)
        except Exception as e:  # a broken script is the server's fault: a 500
            answer = Fail(500, f"the script failed: {type(e).__name__}: {e}")
        if isinstance(answer, str):
            answer = reply(answer)
        if isinstance(answer, Fail):
            call.status = answer.code
            _send_json(http, answer.code, _error_body(answer))
            return
        call.status = 200
        payload = response_json(answer, call)
        if call.stream:
            _send_stream(http, payload, self.stream_chunk)
        else:
            _send_json(http, 200, payload)


def _send_json(http: BaseHTTPRequestHandler, code: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    http.send_response(code)
    http.send_header("content-type", "application/json")
    http.send_header("content-length", str(len(data)))
    http.end_headers()
    http.wfile.write(data)


def _send_stream(http: BaseHTTPRequestHandler, payload: dict[str, Any], size: int) -> None:
    http.send_response(200)
    http.send_header("content-type", "text/event-stream")
    http.send_header("transfer-encoding", "chunked")
    http.end_headers()
    for piece in _stream_pieces(payload, size):
        event = b"data: " + json.dumps(piece).encode() + b"\r\n\r\n"
        http.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        http.wfile.flush()
    http.wfile.write(b"0\r\n\r\n")


def _stream_pieces(payload: dict[str, Any], size: int) -> Iterable[dict[str, Any]]:
    # Text is cut into pieces; other parts, the finish reason and usage come last.
    candidate = payload["candidates"][0]
    parts = candidate["content"]["parts"]
    for part in parts:
        if "text" in part and "functionCall" not in part:
            text = part["text"]
            for i in range(0, max(len(text), 1), size):
                piece = {"text": text[i : i + size]}
                if part.get("thought"):
                    piece["thought"] = True
                yield {"candidates": [{"content": {"role": "model", "parts": [piece]}}]}
    rest = [p for p in parts if "text" not in p or "functionCall" in p]
    yield {
        "candidates": [
            {
                "content": {"role": "model", "parts": rest},
                "finishReason": candidate.get("finishReason", "STOP"),
            }
        ],
        "usageMetadata": payload["usageMetadata"],
        "modelVersion": payload["modelVersion"],
    }


def _error_body(fail: Fail) -> dict[str, Any]:
    return {"error": {"code": fail.code, "message": fail.message, "status": fail.status}}


# -- the wire format ---------------------------------------------------------------------


def _part_from_json(p: dict[str, Any]) -> Part:
    call = p.get("functionCall") or p.get("function_call")
    resp = p.get("functionResponse") or p.get("function_response")
    sig = p.get("thoughtSignature") or p.get("thought_signature")
    return Part(
        text=p.get("text"),
        thought=bool(p.get("thought", False)),
        thought_signature=base64.b64decode(sig) if sig else None,
        function_call=None
        if call is None
        else FunctionCall(name=call["name"], args=call.get("args") or {}, id=call.get("id")),
        function_response=None
        if resp is None
        else FunctionResponse(
            name=resp["name"], response=resp.get("response") or {}, id=resp.get("id")
        ),
    )


def parse_request(body: dict[str, Any], model: str) -> ModelRequest:
    """Read a generateContent JSON body (as google-genai sends it) into a `ModelRequest`."""
    contents = tuple(
        Content(
            role=c.get("role", "user"),
            parts=tuple(_part_from_json(p) for p in c.get("parts", [])),
        )
        for c in body.get("contents", [])
    )
    system = body.get("systemInstruction") or body.get("system_instruction")
    tools = []
    for tool in body.get("tools", []):
        for d in tool.get("functionDeclarations", []) or tool.get("function_declarations", []):
            schema = (
                d.get("parametersJsonSchema")
                or d.get("parameters_json_schema")
                or d.get("parameters")
                or {}
            )
            tools.append(
                FunctionDeclaration(
                    name=d["name"], description=d.get("description", ""), parameters=schema
                )
            )
    config = body.get("generationConfig", {})
    return ModelRequest(
        contents=contents,
        model=model,
        system_instruction="".join(p.get("text", "") for p in system.get("parts", []))
        if system
        else None,
        tools=tuple(tools),
        temperature=config.get("temperature"),
        max_output_tokens=config.get("maxOutputTokens"),
        response_json_schema=config.get("responseJsonSchema"),
    )


def _part_json(p: Part) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.text is not None:
        out["text"] = p.text
    if p.thought:
        out["thought"] = True
    if p.thought_signature is not None:
        out["thoughtSignature"] = base64.b64encode(p.thought_signature).decode()
    if p.function_call is not None:
        fc = p.function_call
        out["functionCall"] = {"name": fc.name, "args": fc.args} | ({"id": fc.id} if fc.id else {})
    return out


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def response_json(answer: ModelResponse, call: Call) -> dict[str, Any]:
    """The generateContent JSON for `answer`; usage is estimated if the script gave none."""
    usage = answer.usage
    if not usage.total_tokens:
        prompt = _estimate_tokens(json.dumps(call.body))
        output = _estimate_tokens(msgspec.json.encode(answer.content).decode())
        usage = Usage(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [_part_json(p) for p in answer.content.parts],
                },
                "finishReason": answer.finish_reason or "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.total_tokens,
        },
        "modelVersion": answer.model_version or call.model,
    }


@contextlib.contextmanager
def gemini_or_scripted(
    script: Script, *, model: str = DEFAULT_GEMINI_MODEL, env: str = "GEMINI_API_KEY"
) -> Iterator[Gemini]:
    """The real Gemini when `env` holds a key; otherwise Gemini's client talking to a
    `ScriptedGemini` that answers with `script`. Examples use it to run offline by default.
    """
    key = os.environ.get(env)
    if key:
        yield Gemini(model, api_key=key)
        return
    with ScriptedGemini(script) as server:
        yield Gemini(model, api_key="offline", base_url=server.url)
