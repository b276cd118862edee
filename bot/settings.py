"""Settings, read once from the environment (and ``.env``); see ``.env.example``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from bot.domain.errors import ConfigError
from bot.domain.policy import PolicySpec


class Settings(BaseSettings):
    """Every knob Greenlight has. Each field is listed in ``.env.example``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="forbid", frozen=True
    )

    # Core
    redis_url: str | None = None
    redis_wait: float = Field(60.0, ge=0)
    data_dir: Path = Path(".greenlight")
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    model: str = "claude-sonnet-4-5"
    model_timeout: float = Field(60.0, gt=0)
    model_max_retries: int = Field(4, ge=0)
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8000"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    agent_modules: list[str] = Field(default_factory=lambda: ["agents"])
    # Where a message naming no agent goes; unset: the model picks by the agents' descriptions.
    default_agent: str | None = None
    approver_groups: dict[str, list[str]] = Field(default_factory=dict)
    approver_groups_allow_empty: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    approval_policies: dict[str, PolicySpec] = Field(default_factory=dict)
    max_body_bytes: int = Field(1_000_000, gt=0)
    # The longest an MCP tool waits for people before answering "still pending, call
    # wait_for_request": under MCP clients' tool timeouts (often 60 s).
    mcp_wait: float = Field(50.0, gt=0, le=600)
    worker_concurrency: int = Field(32, ge=1)
    lease_ms: int = Field(30_000, ge=100)
    claim_idle_ms: int = Field(60_000, ge=100)
    # Deliveries of a thread's queue entry whose step fails before the thread is failed.
    step_attempts: int = Field(5, ge=1)
    retain_finished_days: float = Field(30.0, gt=0)
    # Events each process keeps in memory, of the threads it read or wrote last (README:
    # Sizing); the least recently used thread leaves first.
    thread_cache_events: int = Field(50_000, ge=1)
    archive_dir: Path | None = None

    # Web sign-in (the inbox): without SESSION_SECRET no sign-in or page route is mounted.
    session_secret: SecretStr | None = None
    session_max_age: float = Field(43_200.0, gt=0, le=30 * 86400)
    signin_link_ttl: float = Field(900.0, gt=0, le=86400)
    signin_email_domains: list[str] = Field(default_factory=list)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_name: str = "single sign-on"

    # Operations
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(None, ge=1, le=65535)
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "greenlight"

    # Webhook callbacks
    callback_timeout: float = Field(10.0, gt=0)
    callback_url_refuse_private: bool = False
    delivery_give_up_after: float = Field(3600.0, gt=0)
    delivery_base_delay: float = Field(2.0, gt=0)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_approvals_channel: str | None = None
    # The app has Slack's "Agents & AI Apps" feature on: DMs show the assistant thread
    # status while an agent works, instead of a "Working…" message.
    slack_assistant: bool = False

    # Email
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=0, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    email_from: str | None = None
    email_domain: str | None = None
    email_smtp_port: int | None = Field(None, ge=0, le=65535)
    email_smtp_host: str | None = None
    email_secret: SecretStr | None = None
    email_inbound_secret: SecretStr | None = None
    email_require_auth_results: bool = False
    email_authserv_id: str | None = None
    email_bounces: bool = True
    email_ask_again_per_hour: int = Field(5, ge=0, le=1000)

    @classmethod
    def load(cls) -> Settings:
        """Read settings once; a bad value fails with the variable's name.

        Raises:
            ConfigError: a value does not parse, or ``.env`` has a key that is
                not a setting; the message names each variable.
        """
        try:
            return cls()
        except ValidationError as exc:
            problems = "; ".join(cls._problem(e) for e in exc.errors())
            raise ConfigError(f"invalid settings: {problems}") from exc
        except SettingsError as exc:  # a JSON value (APPROVER_GROUPS) that does not parse
            field = re.search(r'field "(\w+)"', str(exc))
            name = field.group(1).upper() if field else "a JSON setting"
            why = f"not valid JSON ({exc.__cause__})"
            raise ConfigError(f"invalid settings: {name}: {why}") from exc

    @classmethod
    def _problem(cls, error: Any) -> str:
        """One error as ``NAME: what is wrong``; values of secrets and unknown keys not shown."""
        field, *inside = (str(p) for p in error["loc"])
        name = field.upper() + (f" (at {'.'.join(inside)})" if inside else "")
        if error["type"] == "extra_forbidden":
            # Its value may be a secret under a misspelt name: never echo it.
            return f"{name}: not a Greenlight setting (.env.example lists every one)"
        known = cls.model_fields.get(field)
        if known is None or "SecretStr" in str(known.annotation):
            return f"{name}: {error['msg']}"
        return f"{name}: {error['msg']} (got {error['input']!r})"
