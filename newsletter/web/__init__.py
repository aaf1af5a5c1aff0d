"""The subscriber-facing web app: subscribe, confirm, preferences, unsubscribe, archive, API."""

from newsletter.web.app import create_app

__all__ = ["create_app"]
