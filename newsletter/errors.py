"""Errors an operator sees.

Every failure the operator can act on (bad config, unreachable database or SMTP server, a
malformed feed) is a NewsletterError whose message is one clear line; the CLI prints it without
a traceback.
"""


class NewsletterError(Exception):
    """Base of every error the CLI reports as one line."""


class ConfigError(NewsletterError):
    """The settings are invalid or unsafe for this use."""


class SourceError(NewsletterError):
    """A source could not be fetched or parsed at all."""


class StoreUnavailable(NewsletterError):
    """The database cannot be reached or is not initialised."""


class SenderBusy(NewsletterError):
    """Another sender holds the SQLite database."""
