"""LaTeX remnants in feed text turned into the text a reader expects.

Titles and abstracts come from arXiv as their authors typed them: `$\\nabla^2$DFT`,
`$O(n \\log n)$`, `$\\textit{...}$`, `Fr\\'echet`, and sometimes with the backslash already lost
(`Fr'echet`). pylatexenc's latex2text does the conversion; this module decides what is LaTeX at
all, because feed text is mostly prose: a `$` is math only when a span between two of them looks
like math ("Earn $1 Million" keeps its dollar), and `%`, `&`, `#` and a spaced `~` ("~30%") are
prose characters, not a comment, an alignment tab or a tie.
"""

from __future__ import annotations

import re

from pylatexenc.latex2text import LatexNodes2Text

# Anything that may need converting; text without any of these is returned as it is.
_MAYBE_LATEX = re.compile(r"[\\$]|\S~\S|[b-df-hj-np-tv-z]['`]e", re.IGNORECASE)
# An acute or grave e whose backslash was lost ("Fr'echet", "Poincar'e", "Probl`eme"): only
# after a consonant, which no English contraction has before "'e" ("ne'er", "o'er" keep theirs).
_LOST_ACCENT = re.compile(r"(?<=[b-df-hj-np-tv-z])(['`])([eE])", re.IGNORECASE)
_ACCENTED = {("'", "e"): "é", ("'", "E"): "É", ("`", "e"): "è", ("`", "E"): "È"}
# Math: $$...$$, \(...\), \[...\], and $...$ by pandoc's rule, which tells math from prices:
# the opening "$" has a non-space on its right, the closing one a non-space on its left and no
# digit after it, so "$20,000 and $30,000" and "Earn $1 Million" stay prose.
_MATH = re.compile(
    r"\$\$(.{1,500}?)\$\$|\\\((.{1,500}?)\\\)|\\\[(.{1,500}?)\\\]"
    r"|(?<!\\)\$([^\s$](?:[^$]{0,298}[^\s$])?)(?<!\\)\$(?!\d)",
    re.DOTALL,
)
# Characters that are prose in feed text but special to LaTeX, hidden from the converter
# behind private-use characters and put back afterwards.
_PROSE = {"%": "\ue000", "&": "\ue001", "#": "\ue002", "~": "\ue003", "$": "\ue004"}
_RESTORE = str.maketrans({v: k for k, v in _PROSE.items()})
_TIE = re.compile(r"(?<=\S)~(?=\S)")
_SCRIPT = re.compile(r"(\\[A-Za-z]+)?([\^_])(?:\{([^{}\\]{1,20})\}|([0-9A-Za-z+\-=()]))")
_SUPERSCRIPTS = dict(
    zip(
        "0123456789+-=()abcdefghijklmnoprstuvwxyzT",
        "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻᵀ",
        strict=True,
    )
)
_SUBSCRIPTS = dict(
    zip("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ", strict=True)
)
# Soft hyphens (from `\-`) are invisible in print and only get in the way of matching.
_SOFT_HYPHEN = "\u00ad"

_converter = LatexNodes2Text(math_mode="text", strict_latex_spaces=False)


def _scripts(math: str) -> str:
    """`^2`, `^{-1}`, `_i` as Unicode super- and subscripts where every character has one."""

    def replace(match: re.Match[str]) -> str:
        macro, marker, braced, single = match.groups()
        content = (braced if braced is not None else single).replace(" ", "")
        table = _SUPERSCRIPTS if marker == "^" else _SUBSCRIPTS
        if content and all(ch in table for ch in content):
            # "{}" ends a macro name ("\\sum_i"), which would otherwise run into the script.
            return (macro + "{}" if macro else "") + "".join(table[ch] for ch in content)
        return match.group(0)

    return _SCRIPT.sub(replace, math)


def _convert(latex: str) -> str:
    try:
        return str(_converter.latex_to_text(latex))
    except Exception:  # pylatexenc is tolerant; a parser bug must not lose the feed text
        return latex


def _math(content: str) -> str:
    # An unescaped "%" would start a comment that swallows the rest of the span.
    content = re.sub(r"(?<!\\)%", r"\\%", _scripts(content))
    return _convert("$" + content + "$")


def _prose(text: str) -> str:
    if "\\" not in text and "~" not in text:
        return text
    text = _TIE.sub(" ", text)
    for char, stand_in in _PROSE.items():
        text = text.replace("\\" + char, stand_in).replace(char, stand_in)
    return _convert(text).translate(_RESTORE)


def to_text(value: str) -> str:
    """`value` with its LaTeX made readable; text that has none comes back unchanged."""
    if not _MAYBE_LATEX.search(value):
        return value
    value = _LOST_ACCENT.sub(lambda m: _ACCENTED[(m.group(1), m.group(2))], value)
    parts: list[str] = []
    position = 0
    for found in _MATH.finditer(value):
        parts.append(_prose(value[position : found.start()]))
        parts.append(_math(next(group for group in found.groups() if group is not None)))
        position = found.end()
    parts.append(_prose(value[position:]))
    return "".join(parts).replace(_SOFT_HYPHEN, "")
