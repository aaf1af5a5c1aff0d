"""Cleaning untrusted text and URLs, and validating subscriber email addresses."""

from __future__ import annotations

import pytest

from newsletter.addresses import InvalidAddress, normalise_email
from newsletter.text import one_line, safe_url, strip_controls, truncate

# -- one_line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("", ""),
        ("   ", ""),
        ("Deep Optimizer States: Towards Scalable Training\n  of Transformers", None),
        ("Hello\r\nBcc: victim@evil.test", "Hello Bcc: victim@evil.test"),
        ("a\rb", "a b"),
        ("tab\there", "tab here"),
        ("line\u2028separator\u2029paragraph", "line separator paragraph"),
        ("next\u0085line", "next line"),  # NEL is whitespace and a C1 control
        ("vertical\x0btab\x0cfeed", "vertical tab feed"),
        ("Null\x00 byte", "Null byte"),
        ("bell\x07", "bell"),
        ("del\x7f", "del"),
        ("\ufeffBOM first", "BOM first"),
        ("\x1b[31mred\x1b[0m text", "red text"),
        ("\x1b[2Jclear", "clear"),
        ("  padded  ", "padded"),
        ("e\u0301", "\u00e9"),  # NFC: a composed é, one character
        ('$\\nabla^2$DFT <b>kept</b> & "quoted"', '$\\nabla^2$DFT <b>kept</b> & "quoted"'),
    ],
)
def test_one_line_folds_whitespace_and_drops_controls(
    raw: str | None, expected: str | None
) -> None:
    result = one_line(raw)
    if expected is None:
        expected = "Deep Optimizer States: Towards Scalable Training of Transformers"
    assert result == expected


def test_one_line_output_can_never_start_a_new_header_line() -> None:
    hostile = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028\u2029\ufeff"
    result = one_line(f"Subject{hostile}Bcc: x@evil.test")
    assert not any(ch in result for ch in "\r\n\x00\x0b\x0c\x85\u2028\u2029")
    assert all(ch.isprintable() for ch in result)


def test_one_line_drops_characters_that_disguise_text() -> None:
    # A right-to-left override makes "gpj.exe" display reversed; zero-width spaces hide words.
    assert (
        one_line("invoice\u202egpj.exe and zero\u200bwidth\u2066") == "invoicegpj.exe and zerowidth"
    )


def test_one_line_caps_the_length() -> None:
    result = one_line("word " * 100, 50)
    assert len(result) <= 50
    assert result.endswith("…")


def test_strip_controls_keeps_newlines_and_tabs() -> None:
    assert strip_controls("a\nb\tc\x00d\x1b[1me") == "a\nb\tcde"


# -- truncate ----------------------------------------------------------------------------------


def test_truncate_leaves_short_text_alone() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("exactly10!", 10) == "exactly10!"
    assert truncate("anything", None) == "anything"


def test_truncate_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    text = "The quick brown fox jumps over the lazy dog"
    result = truncate(text, 20)
    assert result == "The quick brown fox…"
    assert len(result) <= 20


def test_truncate_drops_trailing_punctuation_before_the_ellipsis() -> None:
    assert truncate("Alpha beta gamma, delta epsilon", 18) == "Alpha beta gamma…"


def test_truncate_hard_cuts_text_without_a_late_space() -> None:
    result = truncate("x" * 100, 10)
    assert result == "x" * 9 + "…"


@pytest.mark.parametrize("limit", [1, 2, 5, 17, 64, 299])
def test_truncate_never_exceeds_the_limit(limit: int) -> None:
    text = "Antidisestablishmentarianism, and so on; " * 20
    assert len(truncate(text, limit)) <= limit


# -- safe_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/example/repo",
        "http://example.org/",
        "HTTPS://Example.org/path?q=1&r=2#frag",
        "https://arxiv.org/abs/2602.05662",
    ],
)
def test_safe_url_keeps_absolute_http_urls(url: str) -> None:
    assert safe_url(url) == url


def test_safe_url_trims_surrounding_whitespace() -> None:
    assert safe_url("  https://example.org/x \n") == "https://example.org/x"


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        ["https://example.org"],
        "",
        "javascript:alert(1)",
        " JaVaScRiPt:alert(1)",
        "data:text/html,<b>x</b>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://example.org/x",
        "mailto:a@example.org",
        "/relative/path",
        "//evil.test/protocol-relative",
        "example.org",
        "https://",
        "https:///path-only",
        "https://example.org/a b",
        "https://example.org/\r\nSet-Cookie: x=1",
        "https://example.org/\x00",
        "https://example.org/\u2028x",
        'https://example.org/"onmouseover="alert(1)',
        "https://example.org/<script>",
        "java\tscript:alert(1)",
        "https://[::1",  # urlsplit raises ValueError
        "https://example.org/" + "a" * 2000,
    ],
)
def test_safe_url_refuses_anything_else(value: object) -> None:
    assert safe_url(value) is None


def test_safe_url_length_limit_is_a_parameter() -> None:
    assert safe_url("https://example.org/abc", limit=10) is None
    assert safe_url("https://example.org/abc", limit=100) == "https://example.org/abc"


# -- email addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ada@example.org", "ada@example.org"),
        ("Ada.Lovelace@Example.ORG", "ada.lovelace@example.org"),
        ("  grace+papers@mail.example.co.uk \n", "grace+papers@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("user_1-x@sub-domain.example.com", "user_1-x@sub-domain.example.com"),
        ("a" * 64 + "@example.org", "a" * 64 + "@example.org"),
    ],
)
def test_normalise_email_accepts_and_lowercases(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty email address"),
        ("   \t ", "empty email address"),
        ("a" * 250 + "@example.org", "email address too long"),
        ("not-an-address", r"no local@domain"),
        ("@example.org", r"no local@domain"),
        ("ada@", r"no local@domain"),
        ("a" * 65 + "@example.org", "the part before the @ is longer than 64 characters"),
        ("ada lovelace@example.org", "invalid characters before the @"),
        ("ada..l@example.org", "invalid characters before the @"),
        (".ada@example.org", "invalid characters before the @"),
        ('"quoted"@example.org', "invalid characters before the @"),
        ("a@b@example.org", "invalid characters before the @"),
        ("josé@example.org", "invalid characters before the @"),
        ("ada@localhost", "invalid domain"),
        ("ada@example..org", "invalid domain"),
        ("ada@-example.org", "invalid domain"),
        ("ada@example.org.", "invalid domain"),
        ("ada@exa_mple.org", "invalid domain"),
        ("ada@bücher.de", "invalid domain"),
        ("ada@" + "a" * 64 + ".org", "invalid domain"),
        ("ada@example.org\r\nBcc: victim@evil.test", "invalid characters before the @"),
        ("ada@example.org\nbcc@evil.test", r"invalid"),
        ("ada\r\n@example.org", "invalid characters before the @"),
    ],
)
def test_normalise_email_refuses_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(InvalidAddress, match=message) as caught:
        normalise_email(raw)
    text = str(caught.value)
    # The message quotes the address with repr, so it is one line whatever the input held.
    assert "\n" not in text and "\r" not in text
    assert len(text) < 200


def test_invalid_address_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalise_email("nope")
