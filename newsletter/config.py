"""Settings: declared once, each with a default and a help string.

Order of precedence (highest first): `NEWSLETTER_*` environment variables, the TOML file named by
NEWSLETTER_CONFIG (else ./config/newsletter.toml when present, else the bundled one), then the
defaults below. A test checks that every setting is documented in the README.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from newsletter.errors import ConfigError

DEMO_SECRET_KEY = "demo-secret-key-do-not-use-in-production"
MIN_SECRET_LENGTH = 16

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_TREE = _PACKAGE_DIR.parent


# Per process; what the throughput bench found best into Postfix (README, "Throughput").
DEFAULT_SMTP_CONNECTIONS = 8
# Beyond a few processes the database and the relay, not Python, are the limit.
MAX_DEFAULT_PROCESSES = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset
    narrow), rather than all the machine has."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_PROCESSES))


def resource_dir(name: str) -> Path:
    """Locate templates/ or config/: the source tree when running from it, else the wheel copy."""
    for candidate in (_SOURCE_TREE / name, _PACKAGE_DIR / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"cannot find the bundled {name}/ folder next to the newsletter package")


def config_file() -> Path | None:
    explicit = os.environ.get("NEWSLETTER_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"NEWSLETTER_CONFIG points to {path}, which is not a file")
        return path
    local = Path("config/newsletter.toml")
    if local.is_file():
        return local
    bundled = resource_dir("config") / "newsletter.toml"
    return bundled if bundled.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", extra="forbid")

    database_url: str = Field(
        "sqlite:///newsletter.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db.",
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(25, description="SMTP relay port.")
    smtp_user: str | None = Field(None, description="SMTP login user; no AUTH when unset.")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password.")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "none",
        description="none (plain, for a local relay), starttls (upgrade on port 587) "
        "or tls (implicit TLS on port 465).",
    )
    smtp_timeout: float = Field(30.0, description="Seconds to wait for any SMTP reply.")
    smtp_connections: int = Field(
        DEFAULT_SMTP_CONNECTIONS,
        ge=1,
        le=256,
        description="SMTP connections kept open and used in parallel, per sending process. A "
        "relay that refuses some of them on connect (421, too many connections) is sent to "
        "over those it accepted.",
    )
    smtp_messages_per_connection: int = Field(
        500, ge=1, description="Messages sent on one connection before it is reopened."
    )
    smtp_rate_limit: float = Field(
        0.0,
        ge=0,
        description="Most messages per second across all connections (and all processes of "
        "a `send`); 0 = no limit.",
    )
    smtp_client: Literal["aiosmtplib", "pipelined"] = Field(
        "pipelined",
        description="pipelined (MAIL, RCPT and DATA sent together when the relay offers "
        "PIPELINING, RFC 2920; a sixth of aiosmtplib's CPU per message) or aiosmtplib (one "
        "command at a time). Both pass the same SMTP fault tests and classify each refusal "
        "by the command that drew it.",
    )
    send_processes: int = Field(
        default_factory=usable_cores,
        ge=1,
        le=64,
        description="Processes a `send` delivers with: the others start sending while the "
        "first still plans. One Python process uses one core, so the default is the cores "
        f"this process may run on, at most {MAX_DEFAULT_PROCESSES}.",
        json_schema_extra={"documented_default": f"usable cores, at most {MAX_DEFAULT_PROCESSES}"},
    )
    render_cache_size: int = Field(
        128,
        ge=0,
        description="Distinct digests (same papers, same matched topics) kept rendered and "
        "encoded, so subscribers who share one only get their links filled in; 0 = off.",
    )
    from_address: str = Field(
        "Trending Papers <papers@localhost>",
        description="From header and envelope sender of every mail (env: NEWSLETTER_FROM).",
        # Operators know this one as NEWSLETTER_FROM; TOML files say from_address.
        validation_alias=AliasChoices("NEWSLETTER_FROM", "from_address"),
    )
    newsletter_name: str = Field("Trending Papers", description="Name shown in mail and pages.")
    base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of the web app; every link in mail is built from it.",
    )
    secret_key: SecretStr = Field(
        SecretStr(DEMO_SECRET_KEY),
        description="Signs links and Message-IDs. The default is refused outside the demo.",
    )
    source: str = Field(
        "hf",
        description="Where `fetch` and `send` get a day's list: hf, arxiv or a file path.",
    )
    hf_api_url: str = Field(
        "https://huggingface.co/api/daily_papers",
        description="Hugging Face daily papers API endpoint.",
    )
    hf_page_size: int = Field(100, ge=1, le=100, description="Items per API page.")
    arxiv_mode: Literal["rss", "api"] = Field(
        "rss", description="arXiv source: the daily RSS feed or the Atom query API."
    )
    arxiv_categories: list[str] = Field(
        default_factory=lambda: ["cs.LG"], description="arXiv categories fetched by `arxiv`."
    )
    arxiv_rss_url: str = Field(
        "https://rss.arxiv.org/rss/", description="arXiv RSS base URL (category appended)."
    )
    arxiv_api_url: str = Field(
        "https://export.arxiv.org/api/query", description="arXiv Atom API endpoint."
    )
    arxiv_max_results: int = Field(200, ge=1, description="Papers asked of the arXiv API.")
    arxiv_request_interval: float = Field(
        3.0, ge=0, description="Seconds between arXiv requests (arXiv asks for 3)."
    )
    http_timeout: float = Field(30.0, description="Seconds before a source request fails.")
    topics_file: Path | None = Field(
        None, description="Topic taxonomy TOML; defaults to config/topics.toml."
    )
    templates_dir: Path | None = Field(
        None, description="Folder of mail and page templates; defaults to templates/."
    )
    max_papers: int = Field(10, ge=1, le=50, description="Most papers in one digest.")
    batch_size: int = Field(
        2000,
        ge=1,
        description="Subscribers planned, or deliveries claimed, per batch (claims shrink to what "
        "the relay sends in half a lease).",
    )
    lease_seconds: int = Field(
        300,
        ge=5,
        description="How long a claimed delivery is reserved before another may retry it.",
    )
    max_attempts: int = Field(
        8, ge=1, description="SMTP attempts per delivery before it fails permanently."
    )
    retry_base_seconds: float = Field(
        2.0, ge=0, description="First retry delay; doubles each attempt, with jitter."
    )
    retry_max_seconds: float = Field(3600.0, ge=0, description="Longest retry delay.")
    retry_wait_seconds: float = Field(
        120.0,
        ge=0,
        description="A `send` waits for retries due within this many seconds before it returns.",
    )
    record_every: int = Field(
        500,
        ge=1,
        description="Sends between writes of their outcomes: what a crash can re-send at most.",
    )
    store_retries: int = Field(
        4,
        ge=0,
        description="Times a failed database call is retried (0.5 s, 1 s, 2 s...) before a "
        "run stops.",
    )
    hard_bounce_limit: int = Field(
        1, ge=1, description="Hard bounces after which an address is suppressed."
    )
    sender_error_threshold: int = Field(
        5,
        ge=1,
        description="Consecutive sender-wide rejections (auth, 5.7.x, MAIL FROM) that pause a run.",
    )
    smtp_unreachable_threshold: int = Field(
        3, ge=1, description="Consecutive failed connection attempts that stop a run."
    )

    confirm_max_age_seconds: int = Field(
        172800, ge=60, description="How long a confirmation link stays valid (default 2 days)."
    )
    confirm_cooldown_seconds: int = Field(
        900, ge=0, description="At most one confirmation mail per address in this many seconds."
    )
    signups_per_ip_per_hour: int = Field(
        20, ge=1, description="Sign-up requests one IP address may make per hour."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics asks for (Authorization: Bearer ...); unset, /metrics "
        "answers 404.",
    )
    weekly_weekday: int = Field(
        0,
        ge=0,
        le=6,
        description="Default day weekly digests go out (0 = Monday ... 6 = Sunday).",
    )
    default_timezone: str = Field(
        "UTC", description="Time zone of subscribers who have not chosen one (IANA name)."
    )
    default_delivery_hour: int = Field(
        8, ge=0, le=23, description="Local hour a digest becomes due unless the subscriber chose."
    )
    digest_lag_days: int = Field(
        1,
        ge=0,
        le=7,
        description="A day's list is mailed this many days later, at each subscriber's local "
        "delivery hour (1: yesterday's complete list every morning).",
    )
    schedule_time: str = Field(
        "00:30",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="UTC time (HH:MM) at which `newsletter run` fetches and plans each day.",
    )
    catchup_grace_hours: float = Field(
        12.0, ge=0, description="After downtime, a missed daily run is caught up once within this."
    )
    worker_poll_seconds: float = Field(
        5.0, gt=0, description="How often an idle worker looks for deliveries that became due."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as plain text or as one JSON object each."
    )
    web_host: str = Field("127.0.0.1", description="Address `newsletter serve` listens on.")
    web_port: int = Field(8000, description="Port `newsletter serve` listens on.")
    trusted_proxy_hops: int = Field(
        0,
        ge=0,
        description="Reverse proxies in front of the web app whose X-Forwarded-For is trusted "
        "for per-IP limits (0 = use the socket address).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from newsletter.due_times import valid_timezone

        if not valid_timezone(value):
            raise ValueError(f"unknown time zone {value!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an absolute http(s) URL")
        return value.rstrip("/")

    @cached_property
    def from_domain(self) -> str:
        address = self.envelope_from
        return address.rsplit("@", 1)[1] if "@" in address else "localhost"

    @cached_property
    def envelope_from(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.from_address)[1]

    @cached_property
    def list_id(self) -> str:
        host = urlsplit(self.base_url).hostname or "localhost"
        return f"daily.{host}"

    def resolved_topics_file(self) -> Path:
        return self.topics_file or resource_dir("config") / "topics.toml"

    def resolved_templates_dir(self) -> Path:
        return self.templates_dir or resource_dir("templates")

    def require_real_secret(self) -> None:
        """Refuse the published demo key: with it anyone could forge unsubscribe links."""
        key = self.secret_key.get_secret_value()
        if key == DEMO_SECRET_KEY or len(key) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"NEWSLETTER_SECRET_KEY is the demo default or shorter than {MIN_SECRET_LENGTH} "
                "characters; set a long random value "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
