"""Settings: the ONLY module that reads environment variables (prefix ``LLMOS_``).

Every other module receives a ``Settings`` object. Values are validated when loaded, and a bad value
stops the daemon or CLI at start with a message naming the variable and what it accepts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

import psutil
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmos.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
          "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int | float) -> int:
    """``"8GiB"`` / ``"512MB"`` / ``1024`` -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a size; use a number of bytes or e.g. '512MiB', '8GB'")
    return int(float(match.group(1)) * _UNITS[unit])


def default_memory_budget() -> int:
    """60% of the machine's RAM: room for the daemon, training jobs and the OS beside the models."""
    return int(psutil.virtual_memory().total * 0.6)


def is_loopback(host: str) -> bool:
    """``localhost`` and loopback addresses; anything else (``0.0.0.0``, a LAN name) is reachable by others."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOS_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path("~/.llmos"), description="folder for the store, database and logs")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty: SQLite file in home")
    host: str = "127.0.0.1"
    port: int = Field(default=7440, ge=1, le=65535)
    memory_budget: int = Field(default=0, description="bytes for loaded models; 0: 60% of RAM")
    keep_alive: float = Field(default=300.0, ge=0, description="seconds an idle model stays loaded")
    max_queue: int = Field(default=64, ge=1, description="waiting requests per model before 503")
    max_batch: int = Field(default=16, ge=1, le=256, description="sequences decoded together")
    max_prefill_tokens: int = Field(default=512, ge=1, description="prompt tokens admitted per scheduler step")
    devices: Literal["auto", "cpu"] = Field(
        default="auto", description="where models run; auto: each CUDA GPU torch sees, then the host; cpu: the host alone")
    gpu_budget: float = Field(default=0.9, gt=0, description="memory the kernel may fill on each GPU: a share "
                              "(<= 1) of its free memory at start, or a size such as 20GiB")
    gpu_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="dtype the transformers engine computes in on a GPU")
    cluster: str = Field(default="", description="Ray cluster to run engines and jobs on: ray://HOST:PORT or "
                         "HOST:PORT (the head's GCS port), auto (the local one, started if none runs); empty: none")
    cluster_timeout: float = Field(default=10.0, gt=0, le=300, description="seconds start-up waits for the "
                                   "cluster's head to answer before failing")
    cluster_cache: str = Field(default="~/.llmos-node/cache", description="folder on each node where shipped "
                               "model files are kept, by digest")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="dtype models compute in; bfloat16 is ~1.7x faster on CPUs with avx512_bf16")
    policy: Literal["fcfs", "priority", "fair"] = "fair"
    engine: Literal["auto", "llamacpp", "hf"] = Field(
        default="auto", description="engine for generation on models more than one can run; auto: the model's own "
        "preference (llama.cpp for a stored GGUF, transformers otherwise)")
    llamacpp_threads: int = Field(default=0, ge=0, le=512, description="CPU threads of each llama.cpp engine; 0: "
                                  "the cores not busy with other work when it loads (at least 1)")
    llamacpp_kv_tokens: int = Field(default=0, ge=0, description="KV-cache cells of each llama.cpp engine; 0: with a "
                                    "shared cache the larger of the model's context and 1024 per slot, per slot 1024 each")
    llamacpp_kv: Literal["shared", "per-slot"] = Field(
        default="shared", description="llama.cpp's KV cache: shared (any one request may use the model's whole "
        "context) or per-slot (each slot its own equal share, which caps a request at that share; faster with many "
        "concurrent requests, since a sequence attends over its own cells only)")
    log_prompts: bool = Field(default=False, description="store prompt and output text in the request log")
    prompt_retention_days: float = Field(default=90.0, ge=0, description="prompt and output text in the request log "
                                         "(kept for a model's feedback loop, or by log_prompts) is erased after this "
                                         "many days; 0: kept until the log row is deleted")
    max_prompt_chars: int = Field(default=32_000, ge=1)
    builtins: bool = Field(default=True, description="register the embedded default models at start")
    allow_pickle: bool = Field(default=False, description="permit importing pickle weights (.bin/.pt)")
    max_jobs: int = Field(default=1, ge=1, description="background jobs whose runner processes live at once")
    job_poll_interval: float = Field(default=0.1, gt=0, le=5,
                                     description="seconds between checks for job control requests and runner exits")
    job_progress_interval: float = Field(default=0.25, ge=0, description="least seconds between stored progress events")
    job_stop_timeout: float = Field(default=30.0, gt=0,
                                    description="seconds a runner gets to reach a pause point on cancel or shutdown")
    cosched: bool = Field(default=True, description="pause background jobs while interactive requests need the machine")
    cosched_priority: Literal["traffic", "balanced", "job"] = Field(
        default="traffic", description="traffic: jobs yield whenever requests queue or run; balanced: only when "
        "requests wait for a batch slot or p95 time-to-first-token passes ttft_target_ms; job: never yield to traffic")
    ttft_target_ms: float = Field(default=1000.0, gt=0, description="p95 time-to-first-token the balanced priority keeps")
    cosched_freeze: bool = Field(default=True, description="pause jobs for traffic by stopping their runner "
                                 "process outright (SIGSTOP) rather than at their next step boundary")
    cosched_min_share: float = Field(default=0.1, ge=0, le=1,
                                     description="least fraction of wall time a job runs over cosched_window_s, "
                                     "even under constant traffic, so it still finishes")
    cosched_window_s: float = Field(default=60.0, gt=0, description="window the minimum share is measured over")
    cosched_resume_after_s: float = Field(default=0.5, ge=0,
                                          description="seconds without interactive load before paused jobs resume")
    job_threads: int = Field(default=0, ge=0, description="torch threads in each job runner; 0: torch's default")
    job_cpu_priority: Literal["idle", "low", "normal"] = Field(
        default="low", description="OS CPU priority of job runners under cosched (the co-scheduler does the yielding "
        "to llmos's requests); low: nice 5, idle: a core only when nothing else on the host wants it (SCHED_IDLE), "
        "normal: the daemon's own")
    job_memory_factor: float = Field(default=4.0, gt=0, description="a training job's memory estimate: its base "
                                     "model's size x this (weights, gradients, optimizer state, activations)")

    alerts_file: Path | None = Field(default=None, description="alert rules YAML; unset: <home>/alerts.yaml, "
                                     "and the shipped defaults when that file does not exist")
    alert_interval: float = Field(default=15.0, gt=0, description="seconds between evaluations of the alert rules")
    alert_webhook: str = Field(default="", description="URL that firing and resolved alerts are POSTed to as JSON")

    auth: Literal["auto", "on", "off"] = Field(
        default="auto", description="API-key authentication; auto: on whenever host is not a loopback address")
    api_key: SecretStr = Field(default=SecretStr(""), description="the API key the CLI and Python client send")
    max_body_bytes: int = Field(default=64 * 1024**2, description="largest request body accepted (413 above)")
    max_tokens: int = Field(default=4096, ge=1, description="most tokens one request may ask to generate")
    max_file_bytes: int = Field(default=64 * 1024**2, description="largest file accepted by POST /v1/files "
                                "(413 above; the request body limit applies too)")

    loop_interval: float = Field(default=30.0, ge=0,
                                 description="seconds between feedback-loop steps in the daemon; 0: off")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        return parse_size(v) if v not in (None, "") else 0  # type: ignore[arg-type]

    @field_validator("gpu_budget", mode="before")
    @classmethod
    def _gpu_budget(cls, v: object) -> float:
        text = str(v).strip()
        try:
            return float(text)
        except ValueError:
            return float(parse_size(text))

    @field_validator("alert_webhook")
    @classmethod
    def _webhook(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("max_body_bytes", "max_file_bytes", mode="before")
    @classmethod
    def _body_size(cls, v: object) -> int:
        size = parse_size(v)  # type: ignore[arg-type]
        if size < 1024:
            raise ValueError("must be at least 1KiB")
        return size

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and "://" not in v:
            raise ValueError("must be a SQLAlchemy URL such as sqlite:////path/llmos.db or postgresql://...")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'llmos.db'}"
        if self.memory_budget <= 0:
            self.memory_budget = default_memory_budget()
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether the daemon demands API keys: always with auth=on, and with auto off loopback."""
        return self.auth == "on" or (self.auth == "auto" and not is_loopback(self.host))

    # -- derived paths ---------------------------------------------------------------------------
    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def lora_gguf_dir(self) -> Path:
        """LoRA adapters converted for llama.cpp, named by what they were made from (safe to delete)."""
        return self.home / "derived" / "lora-gguf"

    @property
    def alerts_path(self) -> Path:
        return (self.alerts_file or self.home / "alerts.yaml").expanduser()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus explicit overrides); raise ConfigError if invalid."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    unknown = sorted(k for k in os.environ if k.startswith("LLMOS_") and k[6:].lower() not in Settings.model_fields)
    if unknown:
        known = ", ".join("LLMOS_" + f.upper() for f in Settings.model_fields)
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known settings: {known}")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"  LLMOS_{field.upper()}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
