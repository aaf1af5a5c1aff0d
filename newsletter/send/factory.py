"""The configured SMTP sender: which client, and its share of the rate limit."""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.send.pipelined import PipelinedSmtpSender
from newsletter.send.senders import Sender, SmtpConfig, SmtpSender


def sender_from_settings(settings: Settings, share: int = 1) -> Sender:
    """The sender `settings.smtp_client` names. With `share` processes sending at once, each
    gets that share of the rate limit, which is for the whole run."""
    config = SmtpConfig.from_settings(settings)
    config.rate_limit /= share
    if settings.smtp_client == "pipelined":
        return PipelinedSmtpSender(config)
    return SmtpSender(config)
