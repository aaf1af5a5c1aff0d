"""The digest's MIME bytes, checked against the raw bytes and the email package's own parser."""

from __future__ import annotations

import email
import email.generator
import email.message
import email.policy
import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from newsletter.links import Links
from newsletter.root import Newsletter
from newsletter.send.message import Envelope, build_message
from tests.conftest import SAMPLE_DATA, TEST_SECRET

BASE_URL = "https://papers.example.org"
DAY = date(2026, 2, 13)
SENT_AT = datetime(2026, 2, 13, 7, 30, tzinfo=UTC)
LINKS = Links(BASE_URL, TEST_SECRET, "papers.example.org")
SALT = "row-salt-of-subscriber-1"
SINGLE_HEADERS = ("From", "To", "Date", "Subject", "Message-ID")
EXPECTED_HEADERS = {
    "from",
    "to",
    "date",
    "subject",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
}
# A line far beyond 998 bytes, non-ASCII, "=" signs, trailing blanks, a leading dot and "From ":
# everything quoted-printable must carry through untouched.
AWKWARD_HTML = (
    '<html><body><p style="margin:0">'
    + "Grüße · naïve ∇²DFT — 日本語 = 50% off ".join(str(i) for i in range(400))
    + "</p>\n.\nFrom the editors \t \n"
    + "<td>trailing spaces   </td>   \n"
    + "🚀 " * 300
    + "</body></html>"
)


def build(**overrides: Any) -> Envelope:
    values: dict[str, Any] = {
        "from_address": "Trending Papers <digest@papers.example.org>",
        "to_address": "ada@example.org",
        "subject": "Trending Papers, 13 Feb: Attention is all you need + 4 more",
        "message_id": LINKS.message_id(1, DAY),
        "list_id": "daily.papers.example.org",
        "list_name": "Trending Papers",
        "unsubscribe_url": LINKS.unsubscribe(1, SALT),
        "text": "Trending papers for you\n\n1. A paper\n   https://huggingface.co/papers/2602.00001\n",
        "html": "<html><body><p>Trending papers for you</p></body></html>",
        "date": SENT_AT,
    }
    values.update(overrides)
    return build_message(**values)


def parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def reserialise(message: email.message.EmailMessage) -> bytes:
    """What a mail client or list server that re-writes the message would produce."""
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=email.policy.SMTP).flatten(message)
    return buffer.getvalue()


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def header_names(data: bytes) -> list[str]:
    """Names of the top-level header fields, read from the raw bytes (continuations skipped)."""
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in header_block(data).split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


def part(message: email.message.EmailMessage, subtype: str) -> str:
    """A part's decoded text. MIME text travels in canonical form (CRLF line breaks), which the
    parser hands back as is: Python's own CRLF messages read back the same way."""
    body = message.get_body(preferencelist=(subtype,))
    assert body is not None
    content = body.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_digest_is_multipart_alternative_with_text_first_then_html() -> None:
    message = parse(build().data)

    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_each_identity_header_appears_exactly_once() -> None:
    data = build().data
    message = parse(data)

    names = header_names(data)
    for name in SINGLE_HEADERS:
        assert names.count(name.lower()) == 1, name
        assert len(message.get_all(name) or []) == 1, name
    assert set(names) == EXPECTED_HEADERS
    assert message["From"].addresses[0].addr_spec == "digest@papers.example.org"
    assert message["From"].addresses[0].display_name == "Trending Papers"
    assert message["To"].addresses[0].addr_spec == "ada@example.org"
    assert message["Date"].datetime == SENT_AT


def test_every_line_ends_in_crlf_and_none_exceeds_998_bytes() -> None:
    long_subject = "A deliberately long subject line " * 60  # cut and folded, never one huge line
    data = build(subject=long_subject, html=AWKWARD_HTML, text=AWKWARD_HTML).data

    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert data.endswith(b"\r\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_list_headers_offer_rfc8058_one_click_unsubscribe_from_the_base_url() -> None:
    message = parse(build().data)

    assert message["List-Id"] == "Trending Papers <daily.papers.example.org>"
    unsubscribe = str(message["List-Unsubscribe"])
    assert unsubscribe == f"<{LINKS.unsubscribe(1, SALT)}>"
    assert unsubscribe.startswith(f"<{BASE_URL}/unsubscribe/1/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    "subject",
    [
        "Résumé: naïve ∇²DFT — 日本語の論文 🚀",
        "Ünïcödé — 日本語 " * 12,  # long enough to need several encoded words
        "Plain ASCII, but with =? and ?= in it",
    ],
)
def test_subject_round_trips_through_the_parser(subject: str) -> None:
    message = parse(build(subject=subject).data)

    assert str(message["Subject"]) == subject.strip()
    assert header_block(build(subject=subject).data).isascii()


HOSTILE_SUBJECTS = {
    "crlf": ("Hello\r\nBcc: victim@evil.test", "Hello Bcc: victim@evil.test"),
    "lf": ("Hello\nBcc: victim@evil.test\n\nbody", "Hello Bcc: victim@evil.test body"),
    "encoded newline": (
        "=?UTF-8?Q?a=0ABcc:_x@evil.test?=",
        "=?UTF-8?Q?a=0ABcc:_x@evil.test?=",
    ),
    "encoded newline after folding": (
        "Trending Papers, 13 Feb: a title long enough to be folded when re-serialised "
        "=?UTF-8?Q?a=0ABcc:_x@evil.test?= + 3 more",
        "Trending Papers, 13 Feb: a title long enough to be folded when re-serialised "
        "=?UTF-8?Q?a=0ABcc:_x@evil.test?= + 3 more",
    ),
    "encoded newline with non-ASCII": (
        "Grüße =?utf-8?b?YQpCY2M6IHhAZXZpbC50ZXN0?= 日本",
        "Grüße =?utf-8?b?YQpCY2M6IHhAZXZpbC50ZXN0?= 日本",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SUBJECTS))
def test_injected_subject_never_becomes_a_header_even_after_reserialising(case: str) -> None:
    """CVE-2024-6923: the email package re-folds an encoded newline into a new header line."""
    subject, shown = HOSTILE_SUBJECTS[case]
    data = build(subject=subject).data
    first = parse(data)
    rewritten = reserialise(first)
    second = parse(rewritten)
    again = parse(second.as_bytes())

    for raw, message in ((data, first), (rewritten, second), (second.as_bytes(), again)):
        assert "bcc" not in {k.lower() for k in message}
        assert set(header_names(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))) == (
            EXPECTED_HEADERS
        )
        assert re.search(rb"(?im)^bcc:", raw) is None
        assert str(message["Subject"]) == shown
        assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
        assert message.get_all("To") == ["ada@example.org"]


def test_header_values_from_other_fields_are_cleaned_too() -> None:
    data = build(
        list_name="Trending\r\nBcc: x@evil.test",
        unsubscribe_url=LINKS.unsubscribe(1, SALT) + "\r\nBcc: y@evil.test",
        message_id=LINKS.message_id(1, DAY) + "\nBcc: z@evil.test",
    ).data

    assert re.search(rb"(?im)^bcc:", data) is None
    assert "bcc" not in {k.lower() for k in parse(data)}


def test_message_id_is_stable_per_subscriber_and_day_and_keyed_by_the_secret() -> None:
    same = LINKS.message_id(1, DAY)
    other_key = Links(BASE_URL, TEST_SECRET + "-rotated", "papers.example.org")

    assert LINKS.message_id(1, DAY) == same
    assert re.fullmatch(r"<20260213\.[0-9a-f]{32}@papers\.example\.org>", same)
    assert LINKS.message_id(2, DAY) != same
    assert LINKS.message_id(1, date(2026, 2, 14)) != same
    assert other_key.message_id(1, DAY) != same
    ids = {LINKS.message_id(s, date(2026, 2, d)) for s in range(1, 51) for d in range(1, 29)}
    assert len(ids) == 50 * 28
    # The header carries it verbatim, so a re-send after a crash is recognisable as a duplicate.
    assert parse(build(message_id=same).data)["Message-ID"] == same
    assert build(message_id=same).data == build(message_id=same).data


@pytest.mark.parametrize(
    "to_address",
    [
        "",
        "not-an-address",
        "ada@example.org, eve@evil.test",
        "<ada@example.org>, <eve@evil.test>",
        "ada@example.org\r\nBcc: eve@evil.test",
        "ada@example.org Bcc: eve@evil.test",
        "ädä@example.org",
        "a@b@example.org",
        "Ada <>",
    ],
)
def test_unusable_recipient_address_is_refused(to_address: str) -> None:
    with pytest.raises(ValueError):
        build(to_address=to_address)


@pytest.mark.parametrize("field", ["from_address", "to_address"])
def test_display_name_that_looks_like_an_encoded_word_stays_literal(field: str) -> None:
    lookalike = "=?UTF-8?Q?a=0ABcc:_x@evil.test?="
    data = build(**{field: f'"{lookalike}" <ada@example.org>'}).data
    message = parse(data)
    header = "From" if field == "from_address" else "To"

    again = parse(reserialise(message))
    for parsed in (message, again):
        assert parsed[header].addresses[0].display_name == lookalike
        assert parsed[header].addresses[0].addr_spec == "ada@example.org"
        assert "bcc" not in {k.lower() for k in parsed}


def test_envelope_addresses_are_the_bare_addresses() -> None:
    envelope = build(to_address="Ada Lovelace <ada@example.org>")

    assert envelope.sender == "digest@papers.example.org"
    assert envelope.recipient == "ada@example.org"
    assert parse(envelope.data)["To"].addresses[0].display_name == "Ada Lovelace"


@pytest.mark.parametrize(
    "to_address",
    [
        "ada@example.org",
        "Ada.Lovelace+digest@mail.example.co.uk",
        "o'brien@example.org",
        "a!#$%&'*+/=?^_`{|}~-z@ex-ample.org",
        "x@localhost",
        # Not plain dot-atoms: these take the parser's path, and must agree with it too.
        "a..b@example.org",
        ".ada@example.org",
        "Ada <ada@example.org>",
    ],
)
def test_plain_recipient_shortcut_agrees_with_the_parser(to_address: str) -> None:
    from newsletter.send.message import _address, _recipient

    assert _recipient(to_address) == _address.__wrapped__(to_address)
    envelope = build(to_address=to_address)
    assert parse(envelope.data)["To"].addresses[0].addr_spec == envelope.recipient


def test_awkward_html_and_text_survive_quoted_printable_exactly() -> None:
    text = AWKWARD_HTML.replace("<", "[") + "\n"
    message = parse(build(html=AWKWARD_HTML, text=text).data)

    assert part(message, "html") == AWKWARD_HTML
    assert part(message, "plain") == text


def test_a_rendered_digest_reaches_the_reader_byte_for_byte(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    app = make_newsletter()
    app.fetch(DAY, str(SAMPLE_DATA / f"{DAY}.json"))
    app.store.subscribers.upsert("ada@example.org", [], [])
    rendered = app.preview("ada@example.org", DAY)
    assert max(len(line) for line in rendered.html.splitlines()) > 998  # MRML's one-line body

    data = build(subject=rendered.subject, html=rendered.html, text=rendered.text).data
    message = parse(data)

    assert part(message, "html") == rendered.html
    assert part(message, "plain") == rendered.text
    assert str(message["Subject"]) == rendered.subject
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
