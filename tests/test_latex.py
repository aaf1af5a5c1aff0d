"""LaTeX remnants in feed text become readable text; prose that merely looks like it is kept."""

from __future__ import annotations

import pytest

from newsletter.latex import to_text
from newsletter.text import feed_text


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("$\\nabla^2$DFT: a universal dataset", "∇²DFT: a universal dataset"),
        ("$\\textit{x}$", "x"),
        ("An $O(n \\log n)$ sort", "An O(n log n) sort"),
        ("Fr'echet Inception Distance", "Fréchet Inception Distance"),
        ("Fr\\'echet and Poincar'e", "Fréchet and Poincaré"),
        ("Probl`eme", "Problème"),
        ("$\\mathcal{O}(N^2)$ and $10^{-3}$", "𝒪(N²) and 10⁻³"),
        ("$x_i$ and $\\ell_2$ and $\\mathbb{R}^{d}$", "xᵢ and ℓ₂ and ℝᵈ"),
        ("$k$-NN with $K=3$ and a $1.5\\times$ speedup", "k-NN with K=3 and a 1.5× speedup"),
        ("We show \\(a^2+b^2\\) and $$\\sum_i x_i$$.", "We show a²+b² and ∑ᵢ xᵢ."),
        ("$\\frac{1}{2}$ of $\\alpha$", "1/2 of α"),
        ("models~(LLMs) at \\emph{scale}", "models (LLMs) at scale"),
        ("50\\% better \\& cheaper", "50% better & cheaper"),
        ("$50\\%$ of cases", "50% of cases"),
    ],
)
def test_latex_becomes_readable_text(raw: str, readable: str) -> None:
    assert to_text(raw) == readable


@pytest.mark.parametrize(
    "prose",
    [
        "Earn $1 Million with Transformers",
        "from $1 million to $2 per day; neither $ is math",
        "$20,000 and $30,000",
        "costs $5/$10",
        "about ~30% fewer tokens, 5% of the time & #1 on the board",
        "don't, we're, o'er, ne'er, O'Neil",
        "C++ {braces} stay -- and so do `quotes'",
        "$",
    ],
)
def test_prose_that_only_looks_like_latex_is_kept(prose: str) -> None:
    assert to_text(prose) == prose


def test_math_next_to_a_price_converts_only_the_math() -> None:
    assert to_text("costs $5 and $x^2$ here") == "costs $5 and x² here"


def test_a_percent_in_latex_text_is_not_a_comment() -> None:
    # A "%" would start a LaTeX comment and swallow the rest of the abstract.
    assert to_text("A \\textbf{bold} 5% gain, and the rest survives") == (
        "A bold 5% gain, and the rest survives"
    )


def test_feed_text_converts_then_folds_caps_and_strips_controls() -> None:
    raw = "Fr'echet\x00 $\\nabla^2$DFT\n  over\x1b[31m lines " + "word " * 2000
    text = feed_text(raw, 120)
    assert text.startswith("Fréchet ∇²DFT over lines word")
    assert len(text) <= 120 and text.endswith("…")
    assert "\n" not in text and "\x00" not in text and "\x1b" not in text
    assert feed_text(None, 10) == "" and feed_text("", 10) == ""


def test_unbalanced_latex_does_not_raise_or_lose_text() -> None:
    assert to_text("\\textbf{unclosed {brace and $x") == "unclosed brace and $x"
