"""Alert rules: the YAML file's schema (pydantic) and its loading.

A rule names one *kind* of condition from a small fixed set (no query language: the daemon evaluates
rules itself from its own rolling windows, without a Prometheus server). A bad file stops the daemon
at start with a message naming the file, the rule and the field.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from llmos.errors import ConfigError

DEFAULT_RULES = "default_alerts.yaml"  # shipped next to this module; used when the rule file does not exist
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``30`` / ``"30s"`` / ``"5m"`` / ``"1h"`` / ``"250ms"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; use seconds or e.g. '250ms', '30s', '5m', '1h'")
    return float(match.group(1)) * _SCALE[match.group(2)]


Duration = Annotated[float, Field(ge=0)]


class _Rule(BaseModel):
    """Fields every rule has. ``window``: how far back the rule looks; ``for``: how long the condition
    must hold before the alert fires (0: at the first evaluation that sees it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = ""
    window: Duration = 300.0
    for_: Duration = Field(default=0.0, alias="for")

    @field_validator("window", "for_", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)

    @model_validator(mode="after")
    def _window_positive(self) -> "_Rule":
        if self.window <= 0:
            raise ValueError("window must be longer than 0 s")
        return self


class LatencyRule(_Rule):
    """A quantile of end-to-end inference latency (``latency``) or time to first token (``ttft``) over
    the window is above ``threshold`` seconds. Needs ``min_requests`` in the window to judge."""

    kind: Literal["latency", "ttft"]
    threshold: float = Field(gt=0)
    quantile: float = Field(default=0.95, gt=0, le=1)
    min_requests: int = Field(default=1, ge=1)
    model: str | None = None
    route: str | None = None  # request-log route name: chat, completion, embeddings, classify, tag


class ErrorRateRule(_Rule):
    """The share of HTTP responses under ``path_prefix`` with a 5xx status in the window is above
    ``threshold`` (0..1). Needs ``min_requests`` responses in the window to judge."""

    kind: Literal["error_rate"]
    threshold: float = Field(ge=0, lt=1)
    min_requests: int = Field(default=1, ge=1)
    path_prefix: str = "/v1/"


class CountRule(_Rule):
    """More than ``threshold`` events in the window: ``queue_full`` (503 responses: a model's queue was
    full), ``job_failed`` (jobs that ended failed), ``canary_rolled_back`` (canaries rolled back)."""

    kind: Literal["queue_full", "job_failed", "canary_rolled_back"]
    threshold: float = Field(default=0, ge=0)


class MemoryRule(_Rule):
    """Loaded models use more than ``threshold`` (0..1) of the memory budget right now."""

    kind: Literal["memory"]
    threshold: float = Field(gt=0, le=1)


Rule = Annotated[Union[LatencyRule, ErrorRateRule, CountRule, MemoryRule], Field(discriminator="kind")]
RULE_KINDS = ("latency", "ttft", "error_rate", "queue_full", "job_failed", "canary_rolled_back", "memory")


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "RuleFile":
        seen: set[str] = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"two rules are named {r.name!r}; names must be unique")
            seen.add(r.name)
        return self


_ADAPTER = TypeAdapter(RuleFile)


def default_rules_text() -> str:
    return resources.files("llmos.obs").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")


def load_rules(path: Path, *, required: bool = False) -> tuple[list[Rule], str]:
    """The rules in ``path`` (or the shipped defaults when it does not exist and is not ``required``,
    i.e. was not named explicitly) and where they came from.

    Raises ConfigError naming the file, the rule (name and index) and the field on any mistake.
    """
    if required and not path.is_file():
        raise ConfigError(f"alert rules file {path} (LLMOS_ALERTS_FILE) does not exist")
    if path.exists():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        text, source = default_rules_text(), f"built-in defaults ({DEFAULT_RULES})"
    return parse_rules(text, source), source


def parse_rules(text: str, source: str) -> list[Rule]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rules {source}: not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"alert rules {source}: the top level must be a mapping with a 'rules' list")
    try:
        return _ADAPTER.validate_python(data).rules
    except ValidationError as exc:
        raise ConfigError(_explain(exc, data, source)) from None


def _explain(exc: ValidationError, data: dict[str, object], source: str) -> str:
    lines = [f"alert rules {source} are invalid:"]
    rules = data.get("rules") if isinstance(data.get("rules"), list) else []
    for err in exc.errors():
        loc = list(err["loc"])
        where = "file"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            idx = loc[1]
            raw = rules[idx] if idx < len(rules) else None  # type: ignore[index]
            name = raw.get("name") if isinstance(raw, dict) else None
            where = f"rule {name!r} (rules[{idx}])" if name else f"rules[{idx}]"
            loc = [p for p in loc[2:] if p not in RULE_KINDS]  # drop the union member's tag
        field = ".".join("for" if p == "for_" else str(p) for p in loc) or "kind"
        lines.append(f"  {where}, field {field!r}: {err['msg']}")
    return "\n".join(lines)
