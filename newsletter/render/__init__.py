"""Rendering digests: MJML compiled once to an HTML Jinja template, then rendered per subscriber."""

from newsletter.render.digest import CachedRenderer, DigestRenderer, DigestTemplate, RenderedDigest

__all__ = ["CachedRenderer", "DigestRenderer", "DigestTemplate", "RenderedDigest"]
