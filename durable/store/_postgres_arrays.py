"""Array parameters in Postgres's binary format, built in a few C-level steps per element.

The store sends each column of a batch as one array parameter (`unnest`). psycopg's own
list dumpers look at every element in Python; these wrappers say the element type up
front, so dumping a column costs a join rather than a walk through psycopg's machinery.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEADER = struct.Struct("!iiiii").pack  # dimensions, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct("!iii").pack  # no dimensions, no nulls, element oid
_LENGTH = struct.Struct("!i").pack
_INT8 = struct.Struct("!iq").pack
_NULL = _LENGTH(-1)
_TRUE, _FALSE = _LENGTH(1) + b"\x01", _LENGTH(1) + b"\x00"


def _array(element_oid: int, count: int, has_null: bool, body: Iterable[bytes]) -> bytes:
    if not count:
        return _EMPTY(0, 0, element_oid)
    return _HEADER(1, has_null, element_oid, count, 1) + b"".join(body)


def _sized(values: Sequence[bytes | None]) -> list[bytes]:
    """Each value after its length (-1 for null)."""
    parts: list[bytes] = []
    for v in values:
        if v is None:
            parts.append(_NULL)
        else:
            parts.append(_LENGTH(len(v)))
            parts.append(v)
    return parts


class Text(list[str | None]):
    """A text[] parameter."""


class Bytes(list[bytes | None]):
    """A bytea[] parameter."""


class Int8(list[int]):
    """A bigint[] parameter (no nulls); casts to integer[] where needed."""


class Bool(list[bool]):
    """A boolean[] parameter (no nulls)."""


class _TextDumper(Dumper):
    format = Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: Any) -> bytes:
        values = [None if s is None else s.encode() for s in obj]
        return _array(25, len(values), None in values, _sized(values))


class _BytesDumper(Dumper):
    format = Format.BINARY
    oid = 1001  # bytea[]

    def dump(self, obj: Any) -> bytes:
        return _array(17, len(obj), None in obj, _sized(obj))


class _Int8Dumper(Dumper):
    format = Format.BINARY
    oid = 1016  # bigint[]

    def dump(self, obj: Any) -> bytes:
        return _array(20, len(obj), False, [_INT8(8, v) for v in obj])


class _BoolDumper(Dumper):
    format = Format.BINARY
    oid = 1000  # boolean[]

    def dump(self, obj: Any) -> bytes:
        return _array(16, len(obj), False, [_TRUE if v else _FALSE for v in obj])


# Only these private classes are affected: registering them for every connection is safe.
for _cls, _dumper in ((Text, _TextDumper), (Bytes, _BytesDumper), (Int8, _Int8Dumper)):
    psycopg.adapters.register_dumper(_cls, _dumper)
psycopg.adapters.register_dumper(Bool, _BoolDumper)


def columns(rows: Sequence[tuple[Any, ...]], *kinds: type[list[Any]]) -> list[list[Any]]:
    """Rows as typed columns: one array parameter per column, for `unnest`."""
    if not rows:
        return [kind() for kind in kinds]
    return [kind(column) for kind, column in zip(kinds, zip(*rows, strict=True), strict=True)]
