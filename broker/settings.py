"""The one typed settings object, read from ``FLEET_*`` environment variables."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from broker.names import Names

MIN_SECRET_BYTES = 32
MAX_SCHEMA_BYTES = 63  # PostgreSQL identifiers
ENV_PREFIX = "FLEET_"
# Hash-tag groups of a fleet on a Redis Cluster, unless set: up to this many masters
# share its keys.
CLUSTER_GROUPS = 16

OverLimitPolicy = Literal["reject", "evict_oldest"]
BusyPolicy = Literal["enqueue", "reject", "interrupt", "steer"]
# classic: one node holds each queue (cheapest); quorum: replicated over a cluster's
# nodes (Raft), surviving the loss of a minority of them. Fixed for a namespace.
QueueType = Literal["classic", "quorum"]
AMQP_SCHEMES = ("amqp", "amqps")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def node_urls(url: str) -> list[str]:
    """The node URLs of an AMQP URL setting: one, or several comma-separated."""
    nodes = [part.strip() for part in url.split(",") if part.strip()]
    if not nodes:
        raise ValueError("must name at least one node")
    return nodes


class ConfigError(RuntimeError):
    """Required configuration is missing or invalid."""


class Settings(BaseSettings):
    """Every knob of a fleet process; read once at the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, populate_by_name=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Refuse to run unless Redis fsyncs every write (appendonly yes, appendfsync
    # always): then nothing acknowledged is lost when Redis is killed. deploy/ sets it.
    redis_durable: bool = False
    # FLEET_REDIS_URL is a startup node of a Redis Cluster: keys spread over hash-tag
    # groups (broker.names), each group one slot, so every script stays in one slot.
    redis_cluster: bool = False
    # How many hash-tag groups the keys spread over; fixed for a namespace's life (its
    # keys are where their group says). Default: 1 on one Redis, 16 on a cluster.
    redis_groups: int | None = Field(None, ge=1, le=1024)
    # Each append to a log waits until this many replicas have it (Redis WAIT, at most
    # a second) before the worker goes on: a master that dies loses nothing logged
    # while its replica keeps up.
    redis_wait_replicas: int = Field(0, ge=0)
    # One node's URL, or the nodes of a cluster, comma-separated: each process
    # connects to one of them and fails over to the next.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # The type of the conversation, dispatch and webhook queues (see QueueType).
    queue_type: QueueType = "classic"
    namespace: str = Field("fleet", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    jwt_secret: SecretStr | None = None
    # Tokens of an identity provider (RS256, ES256): its JWKS, and the issuer and
    # audience its tokens must name (both required with a JWKS URL).
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    agent: str = "workers.agents.echo:EchoAgent"
    # What a conversation does with a message sent while its agent is busy, unless it
    # chose at creation: enqueue, reject, interrupt or steer.
    on_busy: BusyPolicy = "enqueue"
    # The echo agent streams its reply a word per frame, this many seconds apart (0: at once).
    echo_delay: float = Field(0.0, ge=0)
    # The LLM agent (workers.agents.llm:LLMAgent): any OpenAI-compatible endpoint.
    llm_base_url: str = "https://api.openai.com/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(60.0, gt=0)  # seconds per LLM request
    llm_retries: int = Field(2, ge=0)  # on 429, 5xx and timeouts, with the SDK's backoff
    # Characters of earlier turns a turn sends the model at most (the latest that fit):
    # a long-lived conversation must not outgrow the model's context, nor its bill.
    llm_history_chars: int = Field(100_000, ge=0)
    # module:registry of the tools the LLM agent may call (none by default).
    tools: str | None = None
    # Seconds a gateway waits for a conversation's owner to answer a completion (an
    # owner query); the request expires from the queue with it, so none is answered late.
    completion_timeout: float = Field(60.0, gt=0)

    # Webhooks: every agent state change is POSTed, signed with the secret, to this URL
    # (the operator's: not checked for private addresses) and to the conversation's
    # callback_url, if it has one. The secret comes first: the URL's check reads it.
    webhook_secret: SecretStr | None = None
    webhook_url: str | None = None
    # Let callback_url point at loopback, private or link-local addresses (tests, labs).
    webhook_allow_private: bool = False
    webhook_timeout: float = Field(5.0, gt=0)  # seconds per delivery attempt
    # A delivery is retried (capped exponential backoff, up to retry_cap seconds apart)
    # for this long after it was queued, then parked with the dead letters.
    webhook_retry_for: float = Field(3600.0, gt=0)
    webhook_retry_cap: float = Field(60.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    worker_capacity: int = Field(1000, ge=1)
    # A worker whose heartbeat lapses for this long is presumed dead and its
    # conversations move. Shorter = faster failover, but a stalled event loop is
    # suspected sooner; fencing keeps both cases safe.
    liveness_ttl: float = Field(1.0, gt=0.05)
    # A gateway's death only makes passivation wait for its clients' counts to be
    # forgotten, so its liveness can be far longer than a worker's: no false alarms
    # when a busy gateway's event loop stalls.
    gateway_liveness_ttl: float = Field(5.0, gt=0.05)
    reaper_interval: float = Field(0.1, gt=0)
    # One reaper acts at a time; a standby takes over within this many seconds.
    reaper_lease_ttl: float = Field(2.0, gt=0)
    # A conversation owed an owner this long (its claim request lost with a gateway, or
    # no worker had room) is asked for again by the reaper.
    claim_retry_after: float = Field(5.0, gt=0)
    # The longest a publish may wait for the broker's confirm (then: unavailable). A
    # conversation passivates no sooner after its last input, so that input is queued
    # before its queue is deleted.
    publish_timeout: float = Field(10.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)
    # ``fleet conversations --stuck`` lists conversations closing, or with input and no
    # live owner, for longer than this.
    stuck_after: float = Field(60.0, gt=0)
    # What ``fleet purge`` deletes when run without flags: conversations closed, or idle
    # (no input, owner or client), for longer than this many seconds (0: kept forever).
    purge_closed_after: float = Field(0.0, ge=0)
    purge_idle_after: float = Field(0.0, ge=0)
    # A process that cannot reach Redis or RabbitMQ for this long (at startup, or
    # after losing them) exits non-zero, so that its supervisor notices.
    dependency_timeout: float = Field(60.0, gt=0)

    # Running conversations per user, enforced atomically at admission and claim.
    max_conversations_per_user: int = Field(5, ge=1)
    over_limit_policy: OverLimitPolicy = "reject"
    # Socket.IO connections per user, across every gateway.
    max_connections_per_user: int = Field(20, ge=1)
    # A conversation with no client connected and no input for this long is
    # passivated: its loop stops and its lease is released; the next action resumes it.
    # (FLEET_CLOSE_DELAY is its old name.)
    passivate_after: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("FLEET_PASSIVATE_AFTER", "FLEET_CLOSE_DELAY"),
    )

    # Requests per second per user (HTTP requests and Socket.IO actions, across every
    # gateway), with bursts.
    rate_limit: float = Field(20.0, gt=0)
    rate_burst: int = Field(40, ge=1)
    # Each this many bytes of an action's payload count as one more request.
    rate_bytes: int = Field(4096, ge=1)
    # A conversation's log takes no more input past either cap (error conversation_full).
    max_log_events: int = Field(100_000, ge=1)
    max_log_bytes: int = Field(64 * 2**20, ge=1024)
    # History beyond RAM: with a PostgreSQL URL, the log of a passivated or closed
    # conversation moves there (in the schema named like the namespace) and Redis keeps
    # only active conversations' tails. None: every log stays in Redis.
    postgres_url: str | None = None
    # A move owed for this long (its mover died, or PostgreSQL was down) is done by the
    # leading reaper.
    archive_retry_after: float = Field(60.0, gt=0)
    # Origins allowed to call the HTTP API and Socket.IO from a browser, comma-separated
    # ('*' for any); none by default: same-origin pages and non-browser clients only.
    cors_origins: Annotated[list[str], NoDecode] = []
    # A client that reads nothing of what it was sent for this long is disconnected
    # (it resumes with latest_event_id); its backlog costs the gateway bounded memory.
    slow_client_timeout: float = Field(30.0, gt=0)
    # An HTTP request's headers must arrive within this many seconds (slowloris).
    header_timeout: float = Field(10.0, gt=0)
    # Prometheus metrics of workers and reapers on FLEET_HOST:port (0: off);
    # gateways serve /metrics on their own port.
    metrics_port: int = Field(0, ge=0, le=65535)

    # ``fleet fake-llm``, the local stand-in for an OpenAI-compatible model: its port, and
    # the words per second of its unscripted replies.
    fake_llm_port: int = Field(8100, ge=0, le=65535)
    fake_llm_pace: float = Field(20.0, gt=0)

    max_payload_bytes: int = Field(64 * 1024, ge=256)
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls(cls, value: str) -> str:
        nodes = node_urls(value)
        for node in nodes:
            if urlsplit(node).scheme not in AMQP_SCHEMES or not urlsplit(node).hostname:
                raise ValueError("must be amqp:// or amqps:// URLs with a host, comma-separated")
        return ",".join(nodes)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        if problem := url_problem(value):
            raise ValueError(problem)
        secret = info.data.get("webhook_secret")
        if not isinstance(secret, SecretStr) or not secret.get_secret_value():
            raise ValueError("webhooks are signed: set FLEET_WEBHOOK_SECRET too")
        return value

    @field_validator("postgres_url")
    @classmethod
    def _postgres_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        if len(str(info.data.get("namespace", "")).encode()) > MAX_SCHEMA_BYTES:
            raise ValueError(
                "the archive's schema is named like FLEET_NAMESPACE: "
                f"at most {MAX_SCHEMA_BYTES} bytes"
            )
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def webhook_signing_key(self) -> bytes | None:
        """The webhook secret's bytes; None when webhooks are off (no secret)."""
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        return secret.encode() or None

    @property
    def names(self) -> Names:
        """The fleet's keys and queues."""
        groups = self.redis_groups or (CLUSTER_GROUPS if self.redis_cluster else 1)
        return Names(self.namespace, groups)

    @property
    def heartbeat_interval(self) -> float:
        """Renew liveness four times per TTL, so one late beat is not fatal."""
        return self.liveness_ttl / 4

    def to_env(self) -> dict[str, str]:
        """These settings as ``FLEET_*`` variables, for the processes this one starts."""
        env: dict[str, str] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, list):
                value = ",".join(value)
            if value is not None:
                env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    def require_jwt_secret(self) -> str:
        """The JWT secret, or a clear error when it is not configured."""
        if self.jwt_secret is None or not self.jwt_secret.get_secret_value():
            raise ConfigError("FLEET_JWT_SECRET is not set; gateways and tokens need it")
        secret = self.jwt_secret.get_secret_value()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"FLEET_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (HS256)")
        return secret


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a webhook URL (absolute http or https, with a
    host), or None. Shared with callback_url's checks (``broker.webhooks``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "must be a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    return None


def variables() -> dict[str, str]:
    """Every environment variable a setting is read from -> its field name."""
    found: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or ""]
        for choice in choices:
            if isinstance(choice, str) and choice:
                found[choice] = name
        found.setdefault(f"{ENV_PREFIX}{name.upper()}", name)
    return found


def load_settings(
    environ: Mapping[str, str], flags: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings from the environment (``overrides``: command-line flags, spelled as in
    ``flags`` where the flag is not ``--<field-name>``); a bad value is a ``ConfigError``
    that names its variable or flag, never pydantic's field name."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, environ, overrides, flags or {})) from None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``FLEET_*`` variable no setting reads (a typo, most likely)."""
    known = variables()
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def _describe(
    exc: ValidationError,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    flags: Mapping[str, str],
) -> str:
    by_variable = variables()
    lines = []
    for error in exc.errors():
        where = str(error["loc"][0]) if error["loc"] else ""
        field = by_variable.get(where, where)
        if field in overrides:
            source = flags.get(field, f"--{field.replace('_', '-')}")
        else:
            names = [v for v, f in by_variable.items() if f == field]
            source = next((v for v in names if v in environ), names[0] if names else where)
        annotation = str(getattr(Settings.model_fields.get(field), "annotation", ""))
        shown = "" if "SecretStr" in annotation else f"={error['input']!r}"
        if field.endswith("_url") and isinstance(error["input"], str):
            from broker.dependencies import redact  # (it imports this module)

            shown = f"={redact(error['input'])!r}"
        lines.append(f"{source}{shown}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)
