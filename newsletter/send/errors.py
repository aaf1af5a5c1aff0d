"""How a send can fail. Third-party SMTP errors are translated into these at the boundary.

The delivery loop acts on the type: transient errors are retried with backoff, a recipient's
permanent rejection suppresses that address, and a sender-wide rejection pauses the run instead
of blaming every recipient.
"""


class SendError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientError(SendError):
    """4xx replies, timeouts and dropped connections: try again later."""


class RecipientRejected(SendError):
    """A permanent rejection of this one address (5.1.x, 5.2.1, 550 user unknown)."""


class SenderRejected(SendError):
    """A permanent rejection of us, not the recipient (auth, 5.7.x policy, MAIL FROM refused).

    Carrying on would only fail, or wrongly suppress, every remaining subscriber.
    """


class ServerUnreachable(TransientError):
    """No SMTP connection could be opened at all."""
