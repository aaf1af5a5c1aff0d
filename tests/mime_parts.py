"""Comparing two encodings of one message: the same headers and decoded parts, each part valid
quoted-printable (the fast path splices personal values in, so its soft breaks fall elsewhere)."""

from __future__ import annotations

import binascii
import email
import email.policy
import re


def assert_quoted_printable_of(encoded: bytes, text: str) -> None:
    """`encoded` is valid quoted-printable (RFC 2045 6.7) whose decoding is `text`."""
    lines = encoded.split(b"\r\n")
    for line in lines:
        assert len(line) <= 76, line
        assert not line.endswith((b" ", b"\t")), line  # trailing blanks must be encoded
        assert re.fullmatch(rb"(?:[\t\x20-\x3c\x3e-\x7e]|=[0-9A-F]{2})*=?", line), line
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert binascii.a2b_qp(encoded).replace(b"\r\n", b"\n") == normalised.encode("utf-8")


def parts_of(data: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """A message's headers and its decoded parts, for comparing two encodings of one message."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    bodies = [part.get_content() for part in message.iter_parts()]  # type: ignore[attr-defined]
    return list(message.items()), bodies
