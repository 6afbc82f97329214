"""Payloads: values encoded as msgspec JSON text, decoded into declared types, size-capped."""

from __future__ import annotations

from typing import Any

import msgspec

from durable.core.errors import PayloadDecodeError, PayloadEncodeError, PayloadTooLargeError

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""The default cap on one encoded payload: 2 MiB, as Temporal."""


class PayloadCodec:
    """Encodes values to JSON text and decodes JSON text into types. Never pickles.

    `None` is stored as no payload at all, so an absent input and a `None` input are one.

    Args:
        max_bytes: the largest encoded payload accepted, in bytes.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[object, msgspec.json.Decoder[Any]] = {}

    def encode(self, value: object, what: str = "payload") -> str | None:
        """Encode `value` as JSON text.

        Args:
            value: any value msgspec encodes: JSON types, Structs, dataclasses, TypedDicts,
                datetimes, enums, ...
            what: names the value in error messages ("input of activity 'x'").

        Returns:
            The JSON text, or None for None.

        Raises:
            PayloadEncodeError: the value has no JSON form.
            PayloadTooLargeError: the encoded value exceeds `max_bytes`.
        """
        if value is None:
            return None
        try:
            data = self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as e:
            raise PayloadEncodeError(
                f"cannot encode the {what} ({type(value).__qualname__}) as JSON: {e}; use "
                "JSON types, msgspec Structs, dataclasses or TypedDicts"
            ) from None
        self._check_size(len(data), what)
        return data.decode()

    def decode(self, data: str | None, type_: object = Any, what: str = "payload") -> Any:
        """Decode JSON text into `type_` (Any: plain JSON values).

        Raises:
            PayloadDecodeError: the text is not JSON or does not fit `type_`.
            PayloadTooLargeError: the text exceeds `max_bytes`.
        """
        if data is None:
            return None
        self._check_size(len(data), what)
        decoder = self._decoders.get(type_)
        if decoder is None:
            decoder = self._decoders[type_] = msgspec.json.Decoder(type_)
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as e:
            raise PayloadDecodeError(
                f"cannot decode the {what} as {_type_name(type_)}: {e}"
            ) from None

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise PayloadTooLargeError(
                f"the {what} is {size:,} bytes, over the cap of {self.max_bytes:,}; pass a "
                "reference (a key, a URL, a file path) instead of the data itself, or raise "
                "max_payload_bytes"
            )


def check_decodable(type_: object) -> None:
    """Raise TypeError now if msgspec cannot decode into `type_`."""
    try:
        msgspec.json.Decoder(type_)
    except TypeError as e:
        raise TypeError(f"{_type_name(type_)} cannot be used as a payload type: {e}") from None


def _type_name(type_: object) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)
