"""Typed settings, built once at the edge.

Layers, later wins: packaged ``base.yaml`` -> ``{env}.yaml`` (``GENESIS_ENV``, default ``dev``)
from the config folder -> ``GENESIS__SECTION__KEY=value`` environment overrides -> explicit
``overrides`` (``{"llm.backend": "chat"}``, e.g. from ``--set``). Strings may hold ``${VAR}`` or
``${VAR:-default}``; a missing variable without a default is an error naming key and file.
Library code never reads ``os.environ``: it receives these value objects.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from genesis.errors import ConfigError

__all__ = [
    "AgentProfile",
    "ApiKeySettings",
    "AuthSettings",
    "BucketSettings",
    "CacheSettings",
    "KnowledgeSettings",
    "LLMSettings",
    "ModelPrice",
    "RateLimitSettings",
    "RedisSettings",
    "RolloutGates",
    "RolloutSettings",
    "RouterSettings",
    "Scope",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "StoreSettings",
    "TokenizerSettings",
    "load_settings",
    "redact_url",
]

ENVS = ("dev", "staging", "production")
PACKAGED_DIR = Path(__file__).resolve().parent / "defaults"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENV_PREFIX = "GENESIS__"
MIN_API_KEY_CHARS = 24


class _Model(BaseModel):
    # coerce_numbers_to_str: an all-digit API key or password given as 123456 stays a string.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class RedisSettings(_Model):
    url: SecretStr | None = None  # None: the in-process token store (embedded default)
    pool_size: int = Field(16, ge=1, le=1024)
    socket_timeout_s: float = Field(0.25, gt=0)
    check_memory_policy: bool = True
    cluster: bool = False  # url names any node of a Redis Cluster (database 0 only)


class CacheSettings(_Model):
    l1_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    ttl_s: int | None = Field(86_400, ge=1)
    op_timeout_s: float = Field(0.05, gt=0)
    breaker_failures: int = Field(3, ge=1)
    breaker_reset_s: float = Field(2.0, gt=0)
    prefix: str = Field("gt", pattern=r"^[A-Za-z0-9_-]{1,16}$")


class TokenizerSettings(_Model):
    # embedder: the embedding model's own tokenizer (offline default); hf: a tokenizer.json of
    # the served model; remote: the inference server's /tokenize endpoint.
    kind: Literal["embedder", "hf", "remote"] = "embedder"
    path: str | None = None
    vocab_size: int | None = Field(None, ge=2)


class KnowledgeSettings(_Model):
    vector_store: Literal["embedded", "qdrant"] = "embedded"
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    chunk_tokens: int = Field(256, ge=16, le=8192)
    retrieval: Literal["hybrid", "dense", "bm25"] = "hybrid"
    # Concurrent queries' embeddings: one forward pass for up to this many, after waiting at
    # most this long for company (dynamic batching, as Text Embeddings Inference does).
    query_batch_max: int = Field(32, ge=1, le=1024)
    query_batch_wait_ms: float = Field(5.0, ge=0, le=1000)
    # Embed every chunk's sentences (the evidence check's) at ingestion, rather than each the
    # first time an answer weighs it (stored either way, under GENESIS_HOME).
    sentence_vectors_at_ingest: bool = False
    demo_collections: bool = True


class ReplicaSettings(_Model):
    url: str = Field(max_length=2048)
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data  # "- http://host:8000"


class LLMSettings(_Model):
    backend: Literal["extractive", "completions", "chat"] = "extractive"
    base_url: str | None = None
    api_key: SecretStr | None = None
    default_model: str = "baseline"
    timeout_s: float = Field(30.0, gt=0)
    attempt_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_context_tokens: int = Field(4096, ge=64)
    # A model's breaker (per agent and model where agents share it) opens when at least
    # breaker_failures requests are in its window of breaker_window and the share that failed
    # reaches breaker_failure_rate; one verdict per request, not per retry.
    breaker_failures: int = Field(10, ge=1)
    breaker_reset_s: float = Field(30.0, gt=0)
    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_window: int = Field(20, ge=1, le=10_000)
    # Several vLLM servers for the completions backend (instead of base_url); see llm/_replicas.
    replicas: list[ReplicaSettings] = Field(default_factory=list, max_length=256)
    replica_policy: Literal["prefix_affinity", "least_loaded", "round_robin"] | None = None
    replica_load_factor: float = Field(1.25, ge=1)
    replica_prefix_blocks: int = Field(8, ge=1, le=4096)
    replica_max_tries: int = Field(3, ge=1, le=64)
    # A replica whose breaker is open is checked (GET /v1/models) every this many seconds once
    # its reset timeout has passed, so it comes back without a user's request as the probe.
    # 0 turns the checks off (the next request after the reset timeout probes it).
    replica_health_interval_s: float = Field(2.0, ge=0, le=3600)


class ModelNames(_Model):
    finetuned: str | None = None
    baseline: str = "baseline"


class AgentProfile(_Model):
    """One agent, as data: adding an agent is adding a profile."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    description: str
    collection: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    system_prompt: str
    task: Literal["answer", "plan", "tests", "review", "evolve"] = "answer"
    top_k: int = Field(5, ge=1, le=50)
    context_budget: int = Field(2048, ge=64)
    cache_ttl_s: int = Field(86_400, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    models: ModelNames = ModelNames()
    keywords: list[str] = []
    patterns: list[str] = []
    examples: list[str] = []


class RouterSettings(_Model):
    threshold: float = Field(0.30, ge=0, le=1)
    default_agent: str = "support"
    # Route by an intent classifier trained on labelled requests (genesis/router/_intent.py):
    # the packaged examples (None) or a JSON-lines file of {"task", "agent"}, plus every
    # profile's examples. False: card similarity alone.
    intent_classifier: bool = True
    examples_file: str | None = None


class AnswerSettings(_Model):
    """Abstention: say "the knowledge base does not answer this" instead of guessing."""

    abstain: bool = True
    # The threshold on an answer's evidence score (``evidence.score``): the answerability
    # model's probability where it applies, else the linear policy's score. None: each one's
    # calibrated threshold (genesis.rag.AnswerabilityModel, genesis.rag.AbstentionPolicy).
    abstain_threshold: float | None = Field(None, ge=0, le=1)
    # Decide with an answerability model (genesis.rag.AnswerabilityModel) while the knowledge
    # base is the one it was fitted on: the packaged one (the demo's, as shipped) or
    # ``answerability_file``, written by benchmarks/answerability.py for your own.
    answerability_model: bool = True
    answerability_file: str | None = Field(None, max_length=4096)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Bodies over this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1024 * 1024)
    # Requests in flight per process; past it a 503 with Retry-After, never a queue.
    max_in_flight: int = Field(64, ge=1, le=100_000)
    retry_after_s: float = Field(1.0, gt=0, le=3600)
    # The QA and SE-Darwin agents run code a client sent: off unless a deployment opts in.
    allow_code_execution: bool = False
    # The event loop and HTTP parser uvicorn runs: "auto" takes uvloop and httptools (C
    # implementations, installed with Genesis) and falls back to asyncio and h11.
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    http: Literal["auto", "h11", "httptools"] = "auto"
    # How long a thread may hold the GIL while another waits for it (CPython's switch
    # interval, 5 ms by default): an executor thread's pure-Python step holds the event loop
    # up to this long each time the loop wants to run.
    gil_switch_interval_ms: float = Field(1.0, gt=0, le=100)
    # The event loop thread's scheduler time slice (Linux 6.12+ EEVDF, see genesis._sched):
    # short, so the loop runs soon after it wakes; 0 leaves the kernel's default.
    loop_slice_us: float = Field(100.0, ge=0, le=100_000)
    # The event loop thread's real-time priority (SCHED_FIFO, 1-99; see genesis._sched): it
    # then runs as soon as it wakes, ahead of every ordinary thread on the machine. Needs
    # CAP_SYS_NICE or an RLIMIT_RTPRIO allowance; refused, the loop keeps its short slice.
    # 0: an ordinary thread.
    loop_rt_priority: int = Field(1, ge=0, le=99)
    # Requests one keep-alive connection may carry before the server closes it (nginx's
    # keepalive_requests); its client reconnects to whichever worker is free. 0: no limit.
    keepalive_requests: int = Field(100, ge=0, le=1_000_000)


Scope = Literal["query", "run", "admin"]


class ApiKeySettings(_Model):
    """One API key: an id (what logs show), its scopes, and the key itself only as a SHA-256
    digest. ``key`` (e.g. ``${GENESIS_API_KEY}``) is accepted for convenience and hashed
    while loading: the plain key is never kept in the settings."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: tuple[Scope, ...] = ("query",)

    @model_validator(mode="before")
    @classmethod
    def _hash_plain_key(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "key" not in data:
            return data
        data = dict(data)
        plain = data.pop("key")
        if isinstance(plain, SecretStr):
            plain = plain.get_secret_value()
        if data.get("sha256") is not None:
            raise ValueError("give either key or sha256, not both")
        if not isinstance(plain, str) or len(plain) < MIN_API_KEY_CHARS:
            # The value is never echoed: it is (or should have been) a secret.
            raise ValueError(
                f"key must be a string of at least {MIN_API_KEY_CHARS} characters "
                "(make one with `genesis keys new`)"
            )
        data["sha256"] = hashlib.sha256(plain.encode("utf-8")).hexdigest()
        return data

    @field_validator("scopes")
    @classmethod
    def _some_scope(cls, value: tuple[Scope, ...]) -> tuple[Scope, ...]:
        if not value:
            raise ValueError("a key needs at least one scope")
        return tuple(dict.fromkeys(value))


class BucketSettings(_Model):
    """A token bucket: ``burst`` requests at once, refilled at ``rate_per_s``."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


class RateLimitSettings(_Model):
    """Per-client request rates, one bucket per (key id, scope); anonymous clients are
    counted per address. Buckets live in Redis (``redis.url``) when one is configured, so
    replicas share them, else in-process."""

    enabled: bool = True
    query: BucketSettings = BucketSettings(rate_per_s=100.0, burst=200)
    run: BucketSettings = BucketSettings(rate_per_s=0.2, burst=3)
    admin: BucketSettings = BucketSettings(rate_per_s=1.0, burst=10)
    prefix: str = Field("grl", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    op_timeout_s: float = Field(0.05, gt=0)
    max_local_buckets: int = Field(10_000, ge=1)

    def bucket(self, scope: Scope) -> BucketSettings:
        bucket: BucketSettings = getattr(self, scope)
        return bucket


class AuthSettings(_Model):
    keys: list[ApiKeySettings] = []
    rate_limits: RateLimitSettings = RateLimitSettings()

    @field_validator("keys")
    @classmethod
    def _unique(cls, value: list[ApiKeySettings]) -> list[ApiKeySettings]:
        ids = [k.id for k in value]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids must be unique, got {sorted(ids)}")
        if len({k.sha256 for k in value}) != len(value):
            raise ValueError("two key entries hold the same key")
        return value


class StoreSettings(_Model):
    # None: SQLite at GENESIS_HOME/genesis.db; postgresql://user@host:5432/db at scale.
    url: SecretStr | None = None
    # The background queue in front of the store: bounded; a full queue counts what it drops.
    queue_max: int = Field(10_000, ge=1, le=10_000_000)
    batch_max: int = Field(500, ge=1, le=100_000)
    flush_interval_s: float = Field(0.5, gt=0, le=60)


class RolloutGates(_Model):
    """What a stage must show before the rollout moves on, and what rolls it back at once.
    Rates are fractions (0.05 = 5 points); see docs/rollout-statistics.md."""

    alpha: float = Field(0.05, gt=0, lt=0.5)  # false alarms over all metrics and all looks
    mde: float = Field(0.05, gt=0, lt=1)  # smallest success-rate difference worth detecting
    power: float = Field(0.8, gt=0, lt=1)
    min_samples: int = Field(200, ge=10)  # requests per variant in a stage before advancing
    min_stage_minutes: float = Field(30.0, ge=0)
    # advance when the fine-tuned model is shown better (superiority), or shown not worse
    # than the baseline by more than ``mde`` (non_inferiority).
    advance_on: Literal["superiority", "non_inferiority"] = "superiority"
    p95_latency_tolerance: float = Field(0.10, ge=0)  # p95 may grow by 10% before it counts
    fallback_tolerance: float = Field(0.02, ge=0)  # fallback rate may grow by 2 points
    cost_budget_ratio: float = Field(1.5, gt=0)  # cost per request at most 1.5x the baseline
    srm_p: float = Field(0.001, gt=0, lt=1)  # chi-square p below this: split broken, blocked
    error_rate_ceiling: float = Field(0.10, gt=0, le=1)  # guardrail: rolls back at once
    guardrail_min_samples: int = Field(50, ge=1)
    look_every: int = Field(100, ge=10)  # tests see the data at every 100th request


class RolloutSettings(_Model):
    """Staged rollout of agents' fine-tuned models (genesis.rollout)."""

    # HMAC key of the assignment hash. Production sets its own (GENESIS_ROLLOUT_SECRET): with
    # the public default anyone can compute which users get which model.
    secret: SecretStr = SecretStr("genesis-rollout-default-secret")
    stages: list[float] = Field([10.0, 25.0, 50.0, 100.0], min_length=1)
    # Percentage served by the fine-tuned model for an agent whose rollout never started.
    default_percent: float = Field(100.0, ge=0, le=100)
    cache_ttl_s: float = Field(2.0, ge=0, le=60)  # replicas agree within this
    forced_users: dict[str, Literal["finetuned", "baseline"]] = {}
    gates: RolloutGates = RolloutGates()
    auto: bool = False  # the server advances and rolls back on its own
    auto_interval_s: float = Field(300.0, ge=1)
    lock_ttl_s: float = Field(120.0, ge=1)

    @field_validator("stages")
    @classmethod
    def _rising(cls, value: list[float]) -> list[float]:
        if any(not 0 < v <= 100 for v in value) or value != sorted(set(value)):
            raise ValueError(f"stages must rise strictly within (0, 100], got {value}")
        return value


class ModelPrice(_Model):
    """US dollars per million tokens of one model. ``cached_input_per_1m`` (optional) prices
    the prompt tokens that were served from the token cache (the stable prefix a provider's
    prefix cache bills at its cached rate); without it they cost ``input_per_1m``."""

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    cached_input_per_1m: float | None = Field(None, ge=0)


class SessionSettings(_Model):
    """Conversation memory: in Redis when ``redis.url`` is set (shared, survives restarts),
    else in-process. Every bound is on what one session can hold."""

    max_turns: int = Field(20, ge=1, le=1000)
    ttl_s: int = Field(86_400, ge=1, le=90 * 86_400)  # renewed by every turn
    max_turn_chars: int = Field(16_000, ge=256, le=1_000_000)  # question and answer, each
    max_sessions: int = Field(10_000, ge=1, le=10_000_000)  # in-process store only
    prefix: str = Field("gs", pattern=r"^[A-Za-z0-9_-]{1,16}$")


class ObservabilitySettings(_Model):
    metrics: bool = True
    analytics: bool = True
    # OpenTelemetry traces (a span per stage) go to this OTLP/HTTP endpoint; None: off.
    otlp_endpoint: str | None = None
    service_name: str = Field("genesis", min_length=1, max_length=64)
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)  # share of requests traced
    health_timeout_s: float = Field(2.0, gt=0, le=60)  # per dependency in /health/ready
    agent_check_timeout_s: float = Field(15.0, gt=0, le=300)  # /health/agents/{agent}
    # A real agent check costs a model call: at most one per agent per interval and process;
    # calls in between get the last result.
    agent_check_interval_s: float = Field(30.0, ge=0, le=86_400)


class BudgetSettings(_Model):
    """Model-cost budgets in US dollars, exported as ``genesis_cost_budget_usd`` for the
    cost-burn alerts in ``deploy/prometheus/alerts.yml``; None: no alert."""

    cost_per_hour_usd: float | None = Field(None, gt=0)
    cost_per_day_usd: float | None = Field(None, gt=0)


class Settings(_Model):
    env: Literal["dev", "staging", "production"] = "dev"
    home: str | None = None  # None: a per-user data folder
    redis: RedisSettings = RedisSettings()
    cache: CacheSettings = CacheSettings()
    tokenizer: TokenizerSettings = TokenizerSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    llm: LLMSettings = LLMSettings()
    router: RouterSettings = RouterSettings()
    answers: AnswerSettings = AnswerSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    store: StoreSettings = StoreSettings()
    pricing: dict[str, ModelPrice] = {}  # model name -> price; unknown models cost 0 (logged)
    sessions: SessionSettings = SessionSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    rollout: RolloutSettings = RolloutSettings()
    budgets: BudgetSettings = BudgetSettings()
    agents: dict[str, AgentProfile] = {}

    @field_validator("agents", mode="before")
    @classmethod
    def _name_agents(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()}
        return value

    def get(self, dotted: str) -> Any:
        """Value at a dot path (``"cache.ttl_s"``); ConfigError names an unknown key."""
        node: Any = self
        for part in dotted.split("."):
            if isinstance(node, BaseModel) and part in type(node).model_fields:
                node = getattr(node, part)
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise ConfigError(f"unknown configuration key {dotted!r} (at {part!r})")
        return node

    def home_path(self) -> Path:
        if self.home:
            return Path(self.home).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir("genesis", appauthor=False))


def redact_url(url: str) -> str:
    """A URL safe to print: any password (in the user info or a ``password=`` query
    parameter) becomes ``***``; ``redis://:p@ss@host/0`` -> ``redis://:***@host/0``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)((?:^|&)password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load_settings(
    env: str | None = None,
    config_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings; every error names the offending key and file."""
    environ = os.environ if environ is None else environ
    env = env or environ.get("GENESIS_ENV") or "dev"
    if env not in ENVS:
        raise ConfigError(f"GENESIS_ENV={env!r} is not one of {', '.join(ENVS)}")
    folder = Path(config_dir) if config_dir else PACKAGED_DIR
    env_file = folder / f"{env}.yaml"
    if not env_file.is_file():
        raise ConfigError(f"configuration file {env_file} not found")
    data = _read_yaml(PACKAGED_DIR / "base.yaml", environ)
    data = _deep_merge(data, _read_yaml(env_file, environ))
    sources = [str(env_file)]
    env_keys = _env_overrides(environ)
    for key, value in env_keys.items():
        _set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, _parse_scalar(value) if isinstance(value, str) else value)
    if env_keys:
        sources.append("GENESIS__* environment overrides of " + ", ".join(sorted(env_keys)))
    if overrides:
        sources.append("overrides (--set) of " + ", ".join(sorted(overrides)))
    data["env"] = env
    return _validate(data, " + ".join(sources))


def _validate(data: dict[str, Any], origin: str) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration in {origin}: {problems}") from None
    if settings.router.default_agent not in settings.agents and settings.agents:
        raise ConfigError(
            f"invalid configuration in {origin}: router.default_agent: "
            f"{settings.router.default_agent!r} is not a configured agent"
        )
    for name, agent in settings.agents.items():
        if agent.max_tokens >= settings.llm.max_context_tokens:
            raise ConfigError(
                f"invalid configuration in {origin}: agents.{name}.max_tokens "
                f"({agent.max_tokens}) leaves no room for a prompt in llm.max_context_tokens "
                f"({settings.llm.max_context_tokens})"
            )
    return settings


# libyaml's safe loader when PyYAML was built with it: the pure-Python one took ~19 ms to
# read base.yaml, libyaml ~2.4 ms (measured here), on every start of every command.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top")
    expanded: dict[str, Any] = _expand(raw, environ, path, "")
    return expanded


def _expand(node: Any, environ: Mapping[str, str], path: Path, key: str) -> Any:
    if isinstance(node, dict):
        return {
            k: _expand(v, environ, path, f"{key}.{k}" if key else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand(v, environ, path, f"{key}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: key {key!r} needs environment variable {name}, which is unset")

    value = _VAR.sub(substitute, node)
    # A whole-value substitution that came out empty means "not set" (e.g. ${REDIS_URL:-}).
    return None if value == "" and _VAR.fullmatch(node) else value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(_ENV_PREFIX) and len(name) > len(_ENV_PREFIX):
            dotted = name[len(_ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = _parse_scalar(value)
    return out


def _parse_scalar(value: str) -> Any:
    """``"60"`` -> 60, ``"true"`` -> True; anything YAML would not read as a plain scalar
    (``#abc`` is a comment, ``a: b`` a mapping) stays the string it was (keys, passwords)."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if parsed is None and value.strip() not in ("", "~", "null", "Null", "NULL"):
        return value
    return value if isinstance(parsed, dict | list) else parsed


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
