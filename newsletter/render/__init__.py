"""Rendering digests: MJML compiled once to an HTML Jinja template, then rendered per subscriber."""

from newsletter.render.digest import DigestRenderer, RenderedDigest

__all__ = ["DigestRenderer", "RenderedDigest"]
