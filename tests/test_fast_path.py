"""The fast send path: cached rendering and encoding give the same message as doing it per
subscriber, and the pipelining SMTP client classifies every refusal by the command that drew it."""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
from collections.abc import Callable
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from newsletter.records import ClaimedDelivery, SubscriberRecord
from newsletter.root import Newsletter
from newsletter.selection import Interests, Pick, match
from newsletter.send.errors import RecipientRejected, SenderRejected, TransientError
from newsletter.send.factory import sender_from_settings
from newsletter.send.message import (
    EncodedText,
    Envelope,
    _line_start_piece,
    _spliced_value,
    build_message,
    dot_stuffed_lines,
    quoted_printable,
)
from newsletter.send.pipelined import PipelinedSmtpSender, dot_stuffed
from newsletter.send.senders import SmtpConfig, SmtpSender
from newsletter.sources import localfile
from tests.conftest import SAMPLE_DATA
from tests.mime_parts import assert_quoted_printable_of, parts_of
from tests.reliability.faulty_smtp import DROP, FaultyHandler, FaultyServer

DAY = date(2026, 2, 13)
INTERESTS = [
    ((), ()),
    (("llm-inference",), ()),
    (("agents", "reasoning"), ("diffusion",)),
    ((), ("video", "benchmark")),
]
ADDRESSES = ["ada@example.org", "o'brien&co@example.org", "x+tag@example.org"]


@pytest.fixture
def app(make_newsletter: Callable[..., Newsletter]) -> Newsletter:
    newsletter = make_newsletter()
    result, _ = localfile.read(SAMPLE_DATA / "2026-02-13.json")
    newsletter.store.papers.store_day(DAY, result.papers)
    return newsletter


def salt_of(sub_id: int) -> str:
    return f"salt-{sub_id}"


def claimed(
    app: Newsletter, sub_id: int, email_: str, topics: Any, keywords: Any
) -> ClaimedDelivery:
    interests = Interests(tuple(topics), tuple(keywords))
    ranked = app.planner.day_papers(DAY)
    chosen = [p.id for p in ranked if interests.everything or match(p, interests, app.taxonomy)]
    subscriber = SubscriberRecord(
        id=sub_id,
        email=email_,
        status="active",
        topics=tuple(topics),
        keywords=tuple(keywords),
        created_at=datetime(2026, 1, 1),
        token_salt=salt_of(sub_id),
    )
    return ClaimedDelivery(
        id=sub_id,
        digest_date=DAY,
        message_id=app.links.message_id(sub_id, DAY),
        paper_ids=chosen[:10],
        attempts=1,
        subscriber=subscriber,
    )


def uncached(app: Newsletter, delivery: ClaimedDelivery, envelope: Envelope) -> Envelope:
    """The message built the slow way (render and encode everything), with the same Date."""
    sub = delivery.subscriber
    interests = Interests(sub.topics, sub.keywords)
    papers = app.composer.papers(delivery.paper_ids)
    rendered = app.composer.renderer.render(
        subscriber_id=sub.id,
        salt=sub.token_salt,
        email=sub.email,
        day=DAY,
        interests=interests,
        picks=[Pick(p, match(p, interests, app.taxonomy)) for p in papers],
    )
    sent_date = email.message_from_bytes(envelope.data)["Date"]
    return build_message(
        from_address=app.settings.from_address,
        to_address=sub.email,
        subject=rendered.subject,
        message_id=delivery.message_id,
        list_id=app.settings.list_id,
        list_name=app.settings.newsletter_name,
        unsubscribe_url=app.links.unsubscribe(sub.id, sub.token_salt),
        text=rendered.text,
        html=rendered.html,
        date=parsedate_to_datetime(sent_date),
    )


def test_cached_compose_gives_the_message_of_rendering_each_one_on_its_own(
    app: Newsletter,
) -> None:
    n = 0
    for topics, keywords in INTERESTS:
        for address in ADDRESSES:
            n += 1
            delivery = claimed(app, n, address, topics, keywords)
            envelope = app.composer.compose(delivery)
            plain = uncached(app, delivery, envelope)
            # The same headers and the same text in each part; only where the quoted-printable
            # soft breaks fall may differ (the personal values are spliced in, see EncodedText).
            assert parts_of(envelope.data) == parts_of(plain.data)
            head, _, _ = envelope.data.partition(b"\r\n\r\n")
            assert head == plain.data.partition(b"\r\n\r\n")[0]
            # What goes on the wire is exactly what the sender would make of `data` itself.
            assert envelope.wire == dot_stuffed(envelope.data)
            assert envelope.recipient == address
    cache = app.composer.cached_renderer
    assert cache.usable is True
    assert cache.misses == len(INTERESTS)  # one render per distinct digest
    assert cache.hits == n - len(INTERESTS)


def test_cached_message_parses_with_each_subscribers_own_links(app: Newsletter) -> None:
    first = app.composer.compose(claimed(app, 1, "ada@example.org", (), ()))
    second = app.composer.compose(claimed(app, 2, "o'brien&co@example.org", (), ()))
    for sub_id, envelope, shown in (
        (1, first, "ada@example.org"),
        (2, second, "o&#39;brien&amp;co"),
    ):
        message = email.message_from_bytes(envelope.data, policy=email.policy.default)
        html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert shown in html
        assert app.links.unsubscribe(sub_id, salt_of(sub_id)) in text
        assert app.links.unsubscribe(sub_id, salt_of(sub_id)) in html
        for token in app.composer.cached_renderer.tokens.values():
            assert token not in html and token not in text
        assert message["List-Unsubscribe"] == f"<{app.links.unsubscribe(sub_id, salt_of(sub_id))}>"
    assert app.links.unsubscribe(1, salt_of(1)) not in second.data.decode()


def test_a_template_that_transforms_a_personal_field_falls_back_to_plain_rendering(
    app: Newsletter,
) -> None:
    renderer = app.composer.cached_renderer
    # A filter on a personal field would mangle the placeholder: the self-check must notice.
    renderer.renderer._html = renderer.renderer._html.environment.from_string(
        "<p>{{ email | upper }} {{ unsubscribe_url }} {{ headline }}</p>"
    )
    delivery = claimed(app, 3, "ada@example.org", (), ())
    envelope = app.composer.compose(delivery)
    assert renderer.usable is False
    assert b"ADA@EXAMPLE.ORG" in envelope.data


AWKWARD = (
    "TOKENA first line with the token\n"
    + "Grüße = 50% naïve ".join(str(i) for i in range(120))
    + " TOKENB in the middle of a very long line\n"
    + ".\n"
    + "trailing blanks   \t \n"
    + "🚀 " * 80
    + "\nTOKENA at the start, TOKENB at the end TOKENB"
)


@pytest.mark.parametrize(
    "values",
    [
        {"TOKENA": "ada@example.org", "TOKENB": "https://x.example.org/u/1/abc"},
        {"TOKENA": "é" * 200, "TOKENB": "   "},
        {"TOKENA": "", "TOKENB": "="},
    ],
)
def test_encoded_text_is_the_filled_text_quoted_printable(values: dict[str, str]) -> None:
    filled = AWKWARD
    for token, value in values.items():
        filled = filled.replace(token, value)
    encoded = EncodedText(AWKWARD, values.keys())
    plain, wire = encoded.encode(values)
    assert_quoted_printable_of(plain, filled)
    # Stuffed piece by piece, the same as stuffing the whole.
    assert wire == dot_stuffed_lines(plain)
    # The text around the tokens is encoded once; only the tokens are left for each message.
    assert [token for _, token in encoded.places] == [
        "TOKENA",
        "TOKENB",
        "TOKENA",
        "TOKENB",
        "TOKENB",
    ]


@pytest.mark.parametrize("seed", range(40))
def test_encoded_text_is_the_filled_text_quoted_printable_for_random_long_lines(seed: int) -> None:
    """Tokens at every kind of place in lines of every length, with the characters the
    encoder treats specially: splicing values in must never break a line's encoding."""
    rng = random.Random(seed)
    alphabet = ["a", "b", " ", "\t", "=", ".", "é", "🚀", "<", '"', "x" * 7, "ü" * 3, "  "]
    # Characters str.splitlines would break at, though they end no line in mail.
    alphabet += ["\u2028", "\x0c", "\x85", "\x1e"]
    tokens = ("TOKA", "TOKB")
    lines = []
    for _ in range(rng.randrange(1, 6)):
        pieces = [rng.choice(alphabet) for _ in range(rng.randrange(0, 900))]
        for token in rng.sample(tokens, rng.randrange(0, 3)):
            pieces.insert(rng.randrange(len(pieces) + 1), token)
        lines.append("".join(pieces))
    text = "\n".join(lines) + rng.choice(["", "\n", " \n"])
    values = {
        "TOKA": rng.choice(["", "ada@example.org", "é" * 90, ".", "a ", "=", "x" * 80]),
        "TOKB": "https://x.org/u/1",
    }
    filled = text
    for token, value in values.items():
        filled = filled.replace(token, value)
    plain, wire = EncodedText(text, tokens).encode(values)
    assert_quoted_printable_of(plain, filled)
    assert wire == dot_stuffed_lines(plain)


def test_lines_starting_with_a_dot_are_stuffed_in_static_pieces_and_values() -> None:
    text = ".static first\nTOKA\n.personal TOKA\n" + "x" * 75 + ".wrapped onto a new line\n"
    plain, wire = EncodedText(text, ["TOKA"]).encode({"TOKA": ".v"})
    assert_quoted_printable_of(plain, text.replace("TOKA", ".v"))
    assert plain.startswith(b".static") and b"\r\n.personal =\r\n.v=\r\n" in plain
    assert wire.startswith(b"..static") and b"\r\n..personal =\r\n..v=\r\n" in wire
    assert b"=\r\n..wrapped" in wire  # a soft break put the "." first on its line
    assert wire == dot_stuffed_lines(plain)


@pytest.mark.parametrize(
    "value",
    ["https://papers.example.org/u/1/abc", ".", ".dot", "a ", " ", "x" * 75, "x" * 76, "a=b"],
)
def test_a_value_left_as_it_is_gets_the_pieces_the_encoder_would_give(value: str) -> None:
    encoded = _line_start_piece(value)
    assert _spliced_value(value) == (encoded, dot_stuffed_lines(encoded))


def test_a_blank_before_a_line_break_keeps_the_line_within_76_characters() -> None:
    for width in range(70, 80):
        for blank in (" ", "\t"):
            text = "a" * width + blank + "\nnext"
            assert_quoted_printable_of(quoted_printable(text), text)


def test_dot_stuffing() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"


# -- the pipelining client -----------------------------------------------------------------


class PipeliningHandler(FaultyHandler):
    """FaultyHandler whose server advertises PIPELINING (aiosmtpd reads pipelined commands
    in order anyway, it just does not say so)."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def envelope_for(
    recipient: str, body: bytes = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
) -> Envelope:
    return Envelope("digest@papers.example.org", recipient, body)


def run_sends(
    handler: FaultyHandler, recipients: list[str], connections: int = 1
) -> list[BaseException | None]:
    async def go(port: int) -> list[BaseException | None]:
        sender = PipelinedSmtpSender(
            SmtpConfig(host="127.0.0.1", port=port, timeout=5, connections=connections)
        )
        results: list[BaseException | None] = []
        try:
            for rcpt in recipients:
                try:
                    await sender.send(envelope_for(rcpt))
                    results.append(None)
                except Exception as exc:
                    results.append(exc)
        finally:
            await sender.close()
        return results

    with FaultyServer(handler) as server:
        return asyncio.run(go(server.port))


@pytest.fixture(params=["pipelining", "one-at-a-time"])
def handler_class(request: pytest.FixtureRequest) -> type[FaultyHandler]:
    return PipeliningHandler if request.param == "pipelining" else FaultyHandler


def test_pipelined_sender_delivers_intact_messages(handler_class: type[FaultyHandler]) -> None:
    handler = handler_class()
    results = run_sends(handler, [f"r{i}@example.org" for i in range(20)], connections=3)
    assert results == [None] * 20
    assert handler.total == 20


def test_refusals_are_classified_by_stage(handler_class: type[FaultyHandler]) -> None:
    handler = handler_class(
        rcpt_fault=lambda rcpt, n: {
            "gone@example.org": "550 5.1.1 no such user",
            "later@example.org": "451 4.3.0 try later",
            "policy@example.org": "550 5.7.1 rejected by policy",
        }.get(rcpt),
        data_fault=lambda rcpt, n: "554 5.7.1 spam" if rcpt == "spam@example.org" else None,
    )
    results = run_sends(
        handler,
        [
            "gone@example.org",
            "ok1@example.org",
            "later@example.org",
            "policy@example.org",
            "spam@example.org",
            "ok2@example.org",
        ],
    )
    assert isinstance(results[0], RecipientRejected) and results[0].stage == "rcpt"
    assert results[1] is None
    assert isinstance(results[2], TransientError) and results[2].stage == "rcpt"
    assert isinstance(results[3], SenderRejected) and not results[3].certain
    assert isinstance(results[4], SenderRejected) and results[4].stage == "data"
    assert results[5] is None  # the connection was reset (RSET) and reused after each refusal
    assert handler.total == 2
    assert len(handler.sessions) == 1


def test_a_refused_mail_from_is_about_us(handler_class: type[FaultyHandler]) -> None:
    handler = handler_class(mail_fault=lambda n: "553 5.7.1 sender not allowed")
    results = run_sends(handler, ["a@example.org"])
    assert isinstance(results[0], SenderRejected) and results[0].certain


def test_a_connection_dropped_before_data_is_retried_once_on_a_fresh_one(
    handler_class: type[FaultyHandler],
) -> None:
    # The second message's RCPT drops the kept connection: it cannot have been delivered, so
    # it goes again at once on a new connection; a drop on a fresh connection is transient.
    handler = handler_class(
        rcpt_fault=lambda rcpt, n: DROP if rcpt == "b@example.org" and n == 1 else None
    )
    results = run_sends(handler, ["a@example.org", "b@example.org"])
    assert results == [None, None]
    assert handler.accepted["b@example.org"] == 1

    handler = handler_class(rcpt_fault=lambda rcpt, n: DROP if rcpt == "a@example.org" else None)
    results = run_sends(handler, ["a@example.org", "c@example.org"])
    assert isinstance(results[0], TransientError)
    assert results[1] is None


def test_a_connection_dropped_at_data_is_transient_not_retried_at_once(
    handler_class: type[FaultyHandler],
) -> None:
    handler = handler_class(data_fault=lambda rcpt, n: DROP if n == 1 else None)
    results = run_sends(handler, ["a@example.org"])
    assert isinstance(results[0], TransientError)
    assert handler.total == 0


def test_the_setting_selects_the_sender_and_pipelining_is_the_default(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    assert isinstance(sender_from_settings(make_newsletter().settings), PipelinedSmtpSender)
    chosen = sender_from_settings(make_newsletter(smtp_client="aiosmtplib").settings)
    assert isinstance(chosen, SmtpSender)


def test_a_personal_value_with_a_line_break_is_refused() -> None:
    # "a\r" before a text's "\n" is one line break filled in, but two spliced in apart.
    encoded = EncodedText("TOKA\nnext", ["TOKA"])
    with pytest.raises(ValueError, match="one line"):
        encoded.encode({"TOKA": "a\r"})
