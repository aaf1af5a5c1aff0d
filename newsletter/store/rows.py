"""How stored rows become the records the rest of the newsletter sees."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any, cast

from sqlalchemy import CursorResult, Result, Text
from sqlalchemy import cast as cast_sql

from newsletter.records import SubscriberRecord
from newsletter.states import Cadence, DeliveryStatus, SubscriberStatus
from newsletter.store.schema import SubscriberRow

# Stored strings to their enums by dict lookup: records are built by the thousand per batch,
# and calling an Enum class costs several times more.
_SUBSCRIBER_STATUS = {member.value: member for member in SubscriberStatus}
_CADENCE = {member.value: member for member in Cadence}
_DELIVERY_STATUS = {member.value: member for member in DeliveryStatus}


def subscriber_status(value: str) -> SubscriberStatus:
    return _SUBSCRIBER_STATUS[value]


def cadence(value: str) -> Cadence:
    return _CADENCE[value]


def delivery_status(value: str) -> DeliveryStatus:
    return _DELIVERY_STATUS[value]


def subscriber_record(row: Any) -> SubscriberRecord:
    """From an ORM SubscriberRow or a Core row of SUBSCRIBER_COLUMNS (same attribute names)."""
    return _record_of(_by_name(row))


def subscriber_records(rows: Sequence[Any]) -> list[SubscriberRecord]:
    """subscriber_record for a batch of Core rows holding SUBSCRIBER_COLUMNS (among others):
    the columns are found by position once for the batch, since reading a dozen attributes
    by name cost more per row than the query (planning and claims read thousands)."""
    if not rows:
        return []
    fields = rows[0]._fields
    by_position = itemgetter(*(fields.index(name) for name in _SUBSCRIBER_FIELDS))
    return [_record_of(by_position(row)) for row in rows]


def _record_of(values: tuple[Any, ...]) -> SubscriberRecord:
    """A record from the values of SUBSCRIBER_COLUMNS, in that order (SubscriberRecord's)."""
    (sub_id, email, status, topics, keywords, created, bounces, frequency, zone, hour, weekday,
     salt) = values  # fmt: skip
    return SubscriberRecord(
        sub_id,
        email,
        _SUBSCRIBER_STATUS[status],
        strings(topics),
        strings(keywords),
        created,
        bounces,
        _CADENCE[frequency],
        zone,
        hour,
        weekday,
        salt,
    )


def strings(value: list[str] | str | None) -> tuple[str, ...]:
    """A JSON list of strings as a tuple: decoded already (ORM rows), or its JSON text."""
    if isinstance(value, str):
        return _decoded_strings(value)
    return tuple(value or ())


@lru_cache(maxsize=4096)
def _decoded_strings(text: str) -> tuple[str, ...]:
    """Memoised: thousands of subscribers share a few interest lists, and digests a few paper
    lists, so each distinct JSON text is decoded once."""
    return tuple(json.loads(text) or ())


def json_text(column: Any) -> Any:
    """A JSON column read as its text, for `strings` to decode (once per distinct text)."""
    return cast_sql(column, Text).label(column.key)


# The columns a SubscriberRecord is made of. Queries that read subscribers by the thousand
# (planning, claims) select these rather than ORM objects, which cost more to build than the
# query takes to run.
SUBSCRIBER_COLUMNS = (
    SubscriberRow.id,
    SubscriberRow.email,
    SubscriberRow.status,
    json_text(SubscriberRow.topics),
    json_text(SubscriberRow.keywords),
    SubscriberRow.created_at,
    SubscriberRow.bounce_count,
    SubscriberRow.frequency,
    SubscriberRow.timezone,
    SubscriberRow.delivery_hour,
    SubscriberRow.weekday,
    SubscriberRow.token_salt,
)
# Their names in a row, in SubscriberRecord's field order.
_SUBSCRIBER_FIELDS = tuple(column.key for column in SUBSCRIBER_COLUMNS)
_by_name = attrgetter(*_SUBSCRIBER_FIELDS)


def changed(result: Result[Any]) -> bool:
    """Whether an UPDATE or DELETE touched a row (their results are CursorResults)."""
    return bool(cast("CursorResult[Any]", result).rowcount)
