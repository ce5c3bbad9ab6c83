"""Pystol's configuration: one pydantic-settings class, read from `PYSTOL_*` variables.

Every process (API, worker, beat, watcher, CLI) loads it once at start and passes
it down; nothing reads the environment anywhere else. A bad value stops the
process at start with the variable's name and what was expected, because a
chaos tool that guesses its configuration is not one you let near production.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PROTECTED = ("kube-system", "kube-public", "kube-node-lease")
USERINFO = re.compile(r"//[^/@]*@")
SECRET_FIELDS = frozenset({"signing_key", "metrics_token", "api_tokens", "token"})
RETENTION_PATTERN = re.compile(r"(?P<amount>\d{1,9}(?:\.\d{1,6})?)(?P<unit>[smhd])?")
RETENTION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BIND_PATTERN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class SettingsError(Exception):
    """The configuration cannot be used; the message names each bad variable."""


class SigningKeyMissing(SettingsError):
    """PYSTOL_SIGNING_KEY is needed by this process and not set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PYSTOL_", extra="ignore",
                                      validate_default=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="Broker, job store and schedules.")
    kubeconfig: str = Field("", description="Kubeconfig path; empty: in-cluster config, "
                                            "then ~/.kube/config.")
    api_bind: str = Field("127.0.0.1:8080", description="HOST:PORT `pystol api` listens on.")
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer tokens the API accepts.")
    api_workers: int = Field(2, ge=1, le=64, description="WSGI worker processes of the API.")
    protected_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PROTECTED),
        description="Comma-separated namespaces never targeted.")
    namespace: str = Field("pystol", description="Pystol's own namespace; always protected.")
    allow_protected: bool = Field(False, description="Admin switch: allow targeting protected "
                                                     "namespaces.")
    worker_concurrency: int = Field(2, ge=1, le=256, description="Jobs one worker runs at once.")
    kube_qps: float = Field(20.0, gt=0, description="Client-side rate limit to the Kubernetes "
                                                    "API, requests per second.")
    kube_burst: int = Field(40, ge=1, description="Burst allowed above kube_qps.")
    queue: str = Field("pystol.jobs", min_length=1, description="Celery queue for chaos jobs.")
    max_job_seconds: int = Field(3600, ge=60, description="Longest a job may run; the broker's "
                                                          "visibility timeout is twice this.")
    max_experiment_seconds: int = Field(4 * 3600, ge=60, le=24 * 3600, description="Longest "
                                        "an experiment run may take, all its steps, waits "
                                        "and rollbacks included.")
    max_rehearsals: int = Field(1, ge=1, le=16, description="How many server-side rehearsals "
                                "(each a private simulated cluster) run at once across the "
                                "workers; the others wait for a slot.")
    recovery_timeout_seconds: float = Field(300.0, gt=0, description="Default time a workload "
                                                                     "gets to recover.")
    heartbeat_seconds: float = Field(15.0, ge=0.5, le=600, description="A running job's "
                                     "heartbeat lives this long; when it lapses, the job counts "
                                     "as lost and its faults are reverted.")
    reaper_interval_seconds: float = Field(10.0, ge=0.2, le=3600, description="How often each "
                                           "worker looks for orphaned faults to revert.")
    max_request_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body the "
                                                                   "API accepts.")
    health_dir: str = Field("/tmp", description="Directory of the health files that "
                            "`pystol worker` and `pystol beat` keep fresh for their liveness "
                            "probes (pystol-worker.health, pystol-beat.health); empty: none.")
    health_interval_seconds: float = Field(10.0, ge=0.1, le=600, description="How often a "
                                           "worker touches its health file (beat touches its "
                                           "own on every tick, at least once a second).")
    signing_key: SecretStr = Field(SecretStr(""), description="Secret key (at least 16 "
                                   "characters) that seals what the submission service "
                                   "allowed each job, named tokens and schedules' grants, so "
                                   "that a record edited in Redis is refused. The same value "
                                   "for the API, watcher, beat and every worker; Redis never "
                                   "holds it. `pystol up` and the chart generate one.")
    policy_file: str = Field("", description="YAML file of the admin policy (allowed actions "
                             "per namespace, images, signals, caps, windows); empty: the "
                             "safe defaults.")
    kubernetes_auth: bool = Field(True, description="Check bearer tokens Pystol does not know "
                                  "with the cluster's TokenReview, and what they may do with "
                                  "SubjectAccessReviews.")
    audit_max_records: int = Field(100_000, ge=100, le=10_000_000, description="The audit "
                                   "trail keeps at most this many records in Redis.")
    audit_retention_seconds: float = Field(90 * 86400, ge=60, description="The audit trail "
                                           "drops records older than this.")
    # -- hardening (issue 13) ------------------------------------------------------------------
    redis_sentinel_master: str = Field("", description="Redis Sentinel: the monitored "
                                       "master's name, when PYSTOL_REDIS_URL names Sentinels "
                                       "(sentinel://host:26379[;sentinel://host2:26379]/DB).")
    job_retention_seconds: float = Field(
        30 * 86400, ge=60, validation_alias=AliasChoices(
            "PYSTOL_JOB_RETENTION", "PYSTOL_JOB_RETENTION_SECONDS", "job_retention_seconds"),
        description="PYSTOL_JOB_RETENTION: job records (and their timelines and index "
                    "entries) expire this long after they end: seconds, or 90m, 12h, 30d.")
    api_rate_limit: str = Field("50/second;1200/minute", description="Requests per identity "
                                "(token, or client address when none is given) the API "
                                "answers, in flask-limiter's notation; empty: no limit. "
                                "/halt is exempt and has its own capacity.")
    api_address_rate_limit: str = Field("200/second;6000/minute", description="Requests per "
                                        "client address the API answers, whatever token "
                                        "they carry (so inventing a new token per request "
                                        "earns no new budget), except tokens that "
                                        "authenticated on that process in the last minute; "
                                        "empty: no limit. Behind a proxy every client has "
                                        "the proxy's address: raise it, or leave it to the "
                                        "proxy.")
    halt_rate_limit: str = Field("10/second", description="Requests per identity (token, or "
                                 "client address when none is given) to the halt switch (its "
                                 "own capacity, apart from api_rate_limit).")
    metrics_token: SecretStr = Field(SecretStr(""), description="When set, GET /metrics "
                                     "requires this bearer token and shows per-namespace "
                                     "series; when empty, /metrics is public and names no "
                                     "namespace.")
    stream_max_clients: int = Field(32, ge=1, le=1024, description="Server-sent event streams "
                                    "the API serves at once (per API process); more get 503.")
    stream_max_seconds: float = Field(300.0, ge=1, le=86400, description="A server-sent event "
                                      "stream ends after this long (the browser reconnects).")
    api_url: str = Field("http://127.0.0.1:8080", description="Where the CLI finds the API.")
    token: str = Field("", description="Bearer token the CLI sends.")

    @field_validator("api_tokens", "protected_namespaces", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("job_retention_seconds", mode="before")
    @classmethod
    def _retention(cls, value: object) -> object:
        """`30d`, `12h`, `90m`, `45s` or plain seconds."""
        if isinstance(value, str):
            match = RETENTION_PATTERN.fullmatch(value.strip())
            if not match:
                raise ValueError("expected seconds, or a number with s, m, h or d (e.g. 30d)")
            return float(match["amount"]) * RETENTION_UNITS[match["unit"] or "s"]
        return value

    @field_validator("api_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        match = BIND_PATTERN.match(value)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            raise ValueError("expected a redis://, rediss://, unix:// or sentinel:// URL")
        return value

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("signing_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value

    @property
    def signing_key_bytes(self) -> bytes:
        """The key, or SigningKeyMissing: a process that seals or checks grants cannot run
        without one (a guessable default would let anyone who reaches Redis forge them)."""
        key = self.signing_key.get_secret_value()
        if not key:
            raise SigningKeyMissing("PYSTOL_SIGNING_KEY is not set: the API, watcher, beat "
                                    "and workers need the same secret key (at least 16 "
                                    "characters, e.g. `openssl rand -hex 32`)")
        return key.encode()

    @property
    def bind_host(self) -> str:
        return self.api_bind.rsplit(":", 1)[0].strip("[]")

    @property
    def bind_port(self) -> int:
        return int(self.api_bind.rsplit(":", 1)[1])

    def is_protected(self, namespace: str) -> bool:
        return not self.allow_protected and (namespace in self.protected_namespaces
                                             or namespace == self.namespace)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; raise SettingsError naming each bad PYSTOL_ variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else "?"
            given = problem.get("input")
            if field in SECRET_FIELDS:
                given = None  # never echo a secret into logs
            elif isinstance(given, str) and "://" in given:
                given = USERINFO.sub("//***@", given)  # a URL's password
            shown = f" (got {given!r})" if given is not None and not isinstance(given, dict) \
                else ""
            name = field.upper() if field.upper().startswith("PYSTOL_") \
                else f"PYSTOL_{field.upper()}"
            lines.append(f"{name}: {problem['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
