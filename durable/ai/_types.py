"""The conversation as history records it: provider-neutral msgspec Structs, Gemini-shaped."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["user", "model"]


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A model's request to call a tool.

    Attributes:
        name: the tool's name.
        args: its arguments, as the model gave them.
        id: the provider's id for the call, if it gives one.
    """

    name: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str | None = None


class FunctionResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool's answer to one `FunctionCall`, sent back to the model."""

    name: str
    response: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str | None = None


class Part(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One part of a message: text, a function call, or a function response.

    Attributes:
        thought: the text is the model's reasoning summary, not its answer.
        thought_signature: opaque bytes the provider needs back in later turns.
    """

    text: str | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    thought: bool = False
    thought_signature: bytes | None = None


class Content(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a conversation."""

    role: Role
    parts: tuple[Part, ...] = ()

    @property
    def text(self) -> str:
        """The text of its answer parts (thoughts left out), joined."""
        return "".join(p.text for p in self.parts if p.text is not None and not p.thought)

    @property
    def function_calls(self) -> list[FunctionCall]:
        """The function calls it makes, in order."""
        return [p.function_call for p in self.parts if p.function_call is not None]


def user(text: str) -> Content:
    """A user message with one text part."""
    return Content(role="user", parts=(Part(text=text),))


def model(text: str) -> Content:
    """A model message with one text part."""
    return Content(role="model", parts=(Part(text=text),))


class FunctionDeclaration(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the model is told about a tool.

    Attributes:
        name: the tool's name.
        description: what it does and when to use it.
        parameters: a JSON schema (an object schema) for its arguments.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One model call, as it is recorded in history (the activity's input).

    Attributes:
        contents: the conversation so far, oldest first.
        model: which of the worker's models answers (an alias such as "default").
        system_instruction: the system prompt.
        tools: functions the model may call.
        temperature: sampling temperature.
        max_output_tokens: a cap on the answer's length.
        response_json_schema: ask for JSON that fits this schema.
        stream: the name of an orchestration stream to write the answer's text to as it
            arrives (read with `client.read_stream`); history still gets the whole answer.
    """

    contents: tuple[Content, ...]
    model: str = "default"
    system_instruction: str | None = None
    tools: tuple[FunctionDeclaration, ...] = ()
    temperature: float | None = None
    max_output_tokens: int | None = None
    response_json_schema: dict[str, Any] | None = None
    stream: str | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Tokens a call used, as the provider counted them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ModelResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A model's answer, as it is recorded in history (the activity's result).

    Attributes:
        content: the answer message (role "model").
        finish_reason: why the model stopped ("STOP", "MAX_TOKENS", ...).
        usage: tokens used.
        model_version: the provider's name for the model that answered.
    """

    content: Content
    finish_reason: str | None = None
    usage: Usage = Usage()
    model_version: str | None = None

    @property
    def text(self) -> str:
        """The answer's text (thoughts left out)."""
        return self.content.text

    @property
    def function_calls(self) -> list[FunctionCall]:
        """The tool calls the model asks for, in order."""
        return self.content.function_calls

    def json(self, type_: Any = Any) -> Any:
        """Decode the answer's text as JSON into `type_` (structured output).

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: the text does not fit.
        """
        return msgspec.json.decode(_strip_fence(self.text), type=type_)


def _strip_fence(text: str) -> str:
    # Models often wrap JSON in a Markdown code fence even when asked not to.
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return body
