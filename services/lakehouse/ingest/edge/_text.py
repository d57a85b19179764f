"""Untrusted text made safe to show: for the operator's terminal, the logs and the audit log.

A device name, a unit id or a request path can carry terminal escape sequences, bidirectional
overrides or megabytes of text. Everything the gateway shows of such text goes through
``escape`` (control and invisible characters become ``\\xNN``/``\\uNNNN``) and ``clip``.
"""

from __future__ import annotations

MAX_SHOWN = 64  # characters of an attacker-chosen value quoted in an answer or a reason


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every character that is not printable (C0/C1 controls, DEL, format and
    bidi characters, line separators, surrogates, unassigned) written as an escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escaped(c) for c in text)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (before escaping, so a long value costs nothing),
    escaped, saying how much was cut."""
    if len(text) <= limit:
        return escape(text)
    return f"{escape(text[:limit])}...(+{len(text) - limit} chars)"


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """A value from an untrusted party, quoted for a message: clipped, escaped."""
    text = value if isinstance(value, str) else repr(value)
    return "'" + clip(text, limit) + "'"
