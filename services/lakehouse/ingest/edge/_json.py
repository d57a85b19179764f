"""JSON from untrusted parties, bounded before it is parsed.

Python's parser recurses once per nesting level, so ``[[[[...`` a megabyte deep ends in a
RecursionError (a 500) or worse; it also accepts ``NaN``, ``Infinity`` and numbers that
overflow to infinity, none of which RFC 8259 allows, and integers thousands of digits long.
``loads`` measures the nesting depth first, with a few linear passes in C, and parses with
hooks that refuse non-finite numbers and integers beyond 64 bits.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from lakehouse.errors import JSONRejected

_ESCAPE = re.compile(rb"\\.", re.DOTALL)


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


_LONE_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")


INT64 = 2**63


def depth_exceeds(data: bytes, limit: int) -> bool:
    """True if ``data`` nests arrays/objects deeper than ``limit`` (or so unbalanced that its
    depth cannot be bounded). Linear, in C: escapes are dropped, then everything but quotes and
    brackets, then what lies between quotes (strings); innermost ``[]``/``{}`` pairs are then
    removed level by level, at most ``limit`` times."""
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    brackets = b"".join(data.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        # one level: empty pairs become a marker first, so no pair formed by a removal goes too
        reduced = brackets.replace(b"[]", b"x").replace(b"{}", b"x").replace(b"x", b"")
        if len(reduced) == len(brackets):  # unbalanced: the parser reports it, if shallow
            return len(reduced) > limit
        brackets = reduced
    return bool(brackets)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRejected(f"number {text[:32]} overflows a 64-bit float")
    return value


def _int64(text: str) -> int:
    if len(text) > 20:  # longer than any 64-bit integer: refuse before converting
        raise JSONRejected(f"integer {text[:24]}... does not fit in 64 bits")
    value = int(text)
    if not -INT64 <= value < INT64:
        raise JSONRejected(f"integer {text} does not fit in 64 bits")
    return value


def _no_constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not a JSON number")


def _check_unicode(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``), which no UTF-8 writer can store."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key)
            _check_unicode(item)


def loads(data: bytes, *, max_depth: int) -> Any:
    """Parse ``data`` as strict JSON at most ``max_depth`` levels deep; raises JSONRejected."""
    if depth_exceeds(data, max_depth):
        raise JSONRejected(f"JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(data, parse_float=_finite, parse_int=_int64, parse_constant=_no_constant)
    except JSONRejected:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONRejected(f"not JSON: {str(exc)[:120]}") from exc
    if _LONE_SURROGATE_HINT.search(data):  # rare: only escaped non-BMP or broken text
        try:
            _check_unicode(value)
        except UnicodeEncodeError as exc:
            raise JSONRejected("a string holds a lone UTF-16 surrogate (not Unicode text)") from exc
    return value
