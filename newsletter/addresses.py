"""Validating and normalising subscriber email addresses."""

from __future__ import annotations

import re

# Deliberately stricter than RFC 5322: plain ASCII addresses that every relay accepts, so that a
# malformed address is refused at the door rather than bounced later.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class InvalidAddress(ValueError):
    pass


def normalise_email(raw: str) -> str:
    """Return the address lowercased, or raise InvalidAddress saying what is wrong with it."""
    address = raw.strip()
    shown = address[:80]
    if not address:
        raise InvalidAddress("empty email address")
    if len(address) > 254:
        raise InvalidAddress(f"email address too long: {shown!r}…")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(f"not an email address (no local@domain): {shown!r}")
    if len(local) > 64:
        raise InvalidAddress(f"the part before the @ is longer than 64 characters: {shown!r}")
    if not _LOCAL.fullmatch(local):
        raise InvalidAddress(f"invalid characters before the @ in {shown!r}")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidAddress(f"invalid domain in {shown!r}")
    return f"{local}@{domain}".lower()


def mailbox(email: str) -> str:
    """The mailbox an address delivers to, as far as a sign-up limit should care: case and any
    +tag folded, so victim+1@ and VICTIM@ count as one (most providers deliver both there)."""
    local, _, domain = email.lower().rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}"
