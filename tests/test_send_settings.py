"""Each sending component reads its own settings: the SMTP config, the delivery policy, and the
sender the settings name."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from newsletter.config import Settings
from newsletter.send.engine import DeliveryPolicy
from newsletter.send.factory import sender_from_settings
from newsletter.send.pipelined import PipelinedSmtpSender
from newsletter.send.senders import PooledSender, Sender, SmtpConfig, SmtpSender


def test_the_smtp_config_is_read_from_the_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        smtp_host="relay.example.org",
        smtp_port=587,
        smtp_user="news",
        smtp_password="s3cret",
        smtp_tls="starttls",
        smtp_timeout=12.5,
        smtp_connections=6,
        smtp_messages_per_connection=250,
        smtp_rate_limit=40.0,
    )
    assert SmtpConfig.from_settings(settings) == SmtpConfig(
        host="relay.example.org",
        port=587,
        user="news",
        password="s3cret",
        tls="starttls",
        timeout=12.5,
        connections=6,
        messages_per_connection=250,
        rate_limit=40.0,
    )
    assert SmtpConfig.from_settings(make_settings()).password is None


def test_the_delivery_policy_is_read_from_the_settings(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        batch_size=700,
        lease_seconds=90,
        max_attempts=3,
        retry_base_seconds=1.5,
        retry_max_seconds=600,
        retry_wait_seconds=30,
        hard_bounce_limit=2,
        sender_error_threshold=9,
        smtp_unreachable_threshold=7,
        record_every=11,
        store_retries=2,
    )
    defaults = DeliveryPolicy()
    assert DeliveryPolicy.from_settings(settings) == DeliveryPolicy(
        batch_size=700,
        lease_seconds=90,
        max_attempts=3,
        retry_base_seconds=1.5,
        retry_max_seconds=600,
        retry_wait_seconds=30,
        hard_bounce_limit=2,
        sender_error_threshold=9,
        unreachable_threshold=7,
        record_every=11,
        store_retries=2,
        store_retry_seconds=defaults.store_retry_seconds,
        planning_poll_seconds=defaults.planning_poll_seconds,
    )


@pytest.mark.parametrize(
    ("client", "kind"), [("pipelined", PipelinedSmtpSender), ("aiosmtplib", SmtpSender)]
)
def test_the_sender_is_the_client_the_settings_name_with_its_share_of_the_rate(
    make_settings: Callable[..., Settings], client: str, kind: type
) -> None:
    settings = make_settings(smtp_client=client, smtp_rate_limit=30.0, smtp_connections=5)
    sender = sender_from_settings(settings)
    assert isinstance(sender, kind)
    assert sender.concurrency == 5
    assert rate(sender) == 30.0
    assert rate(sender_from_settings(settings, share=3)) == 10.0  # the rate is for the whole run
    assert rate(sender_from_settings(make_settings(), share=2)) == 0.0  # unlimited stays so


def rate(sender: Sender) -> float:
    assert isinstance(sender, PooledSender)
    return sender.config.rate_limit
