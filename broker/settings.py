"""The one typed settings object, read from ``FLEET_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
ENV_PREFIX = "FLEET_"

OverLimitPolicy = Literal["reject", "evict_oldest"]


class ConfigError(RuntimeError):
    """Required configuration is missing or invalid."""


class Settings(BaseSettings):
    """Every knob of a fleet process; read once at the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, populate_by_name=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    namespace: str = Field("fleet", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    jwt_secret: SecretStr | None = None
    agent: str = "workers.agents.echo:EchoAgent"

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
    shutdown_grace: float = Field(30.0, ge=0)

    # Running conversations per user, enforced atomically at admission and claim.
    max_conversations_per_user: int = Field(5, ge=1)
    over_limit_policy: OverLimitPolicy = "reject"
    # A conversation with no client connected and no input for this long is
    # passivated: its loop stops and its lease is released; the next action resumes it.
    # (FLEET_CLOSE_DELAY is its old name.)
    passivate_after: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("FLEET_PASSIVATE_AFTER", "FLEET_CLOSE_DELAY"),
    )

    # Client actions per second per connection (and per user over HTTP), with bursts.
    rate_limit: float = Field(20.0, gt=0)
    rate_burst: int = Field(40, ge=1)
    # Prometheus metrics of workers and reapers on FLEET_HOST:port (0: off);
    # gateways serve /metrics on their own port.
    metrics_port: int = Field(0, ge=0, le=65535)

    max_payload_bytes: int = Field(64 * 1024, ge=256)
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

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
