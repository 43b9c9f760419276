"""The search space of a hyperparameter study: which knobs a tuning job turns, over which values.

A dimension is a range (``low:high``, optionally ``:log``) or a list of choices (``a,b,c``); the CLI
and API accept that text form (``learning_rate=1e-5:1e-3:log``, ``lora_r=4,8,16``) or the JSON form
(``{"low": 1e-5, "high": 1e-3, "log": true}`` / ``{"choices": [4, 8, 16]}``). Only the knobs in
``TUNABLE`` can be searched: the rest (``max_steps``, ``seed``...) say how a run is done, not how
well it learns, so they are fixed for every trial through the study's ``hyperparameters``.

``default_space`` is what a user gets without naming any dimension: learning rate on a log scale
around the task and method's default, epochs, batch size and warm-up, plus LoRA rank and dropout
for LoRA and the number of virtual tokens for prompt / prefix tuning. A user's dimensions replace
the defaults of the same name; a knob fixed in ``hyperparameters`` leaves the default space (and a
fixed ``max_steps`` takes epochs out of it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from llmos.data.rows import Task
from llmos.errors import InvalidInput
from llmos.train.config import DEFAULT_LR, DEFAULTS, Hyperparameters

Value = int | float | str

# knob -> whether a range over it is whole numbers
TUNABLE: dict[str, bool] = {
    "learning_rate": False, "epochs": True, "batch_size": True, "warmup_ratio": False, "weight_decay": False,
    "max_length": True, "lora_r": True, "lora_alpha": True, "lora_dropout": False, "num_virtual_tokens": True,
}
METHOD_KNOBS = {"lora_r": {"lora"}, "lora_alpha": {"lora"}, "lora_dropout": {"lora"},
                "num_virtual_tokens": {"prompt", "prefix"}}


class Dimension(BaseModel):
    """One searched knob: a range (``low``..``high``, ``log`` for a log scale) or ``choices``."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Value] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Dimension":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either low/high or choices, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            if len(set(map(str, self.choices))) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low:g} must be below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must start above 0 (got {self.low:g})")
        return self

    def values_to_check(self) -> list[Value]:
        return list(self.choices) if self.choices is not None else [self.low, self.high]  # type: ignore[list-item]

    def describe(self) -> str:
        if self.choices is not None:
            return ",".join(str(c) for c in self.choices)
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


def parse_dimension(name: str, value: Any) -> Dimension:
    """Text (``1e-5:1e-3:log``, ``4,8,16``), a list of choices, or a dict -> a checked Dimension."""
    where = f"space.{name}"
    try:
        if isinstance(value, Dimension):
            dim = value
        elif isinstance(value, dict):
            dim = Dimension.model_validate(value)
        elif isinstance(value, list):
            dim = Dimension(choices=value)
        elif isinstance(value, str):
            dim = _from_text(value)
        else:
            raise ValueError(f"expected 'low:high[:log]', 'a,b,c', a list or an object, got {value!r}")
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", param=where) from None
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}", param=where) from None
    return _typed(name, dim)


def _from_text(text: str) -> Dimension:
    text = text.strip()
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        log = parts[-1].lower() == "log"
        if log:
            parts = parts[:-1]
        if len(parts) != 2:
            raise ValueError(f"a range is 'low:high' or 'low:high:log', got {text!r}")
        return Dimension(low=_number(parts[0]), high=_number(parts[1]), log=log)
    if not text:
        raise ValueError("empty: give a range 'low:high' or choices 'a,b,c'")
    return Dimension(choices=[_scalar(p.strip()) for p in text.split(",")])


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _scalar(text: str) -> Value:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _typed(name: str, dim: Dimension) -> Dimension:
    """Refuse knobs that cannot be searched, and values the knob itself would refuse."""
    if name not in TUNABLE:
        raise InvalidInput(f"space.{name}: {name!r} cannot be searched; searchable hyperparameters: "
                           f"{', '.join(TUNABLE)}", param=f"space.{name}")
    if TUNABLE[name] and dim.choices is None and not (float(dim.low).is_integer() and float(dim.high).is_integer()):
        raise InvalidInput(f"space.{name}: {name} takes whole numbers; got {dim.describe()}", param=f"space.{name}")
    for value in dim.values_to_check():
        try:
            Hyperparameters.model_validate({name: value})
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise InvalidInput(f"space.{name}: {value!r} is not a valid {name}: {msg}", param=f"space.{name}") from None
    return dim


def default_space(task: Task, method: str) -> dict[str, Dimension]:
    """The space a user gets without naming one (see the module docstring)."""
    d = DEFAULTS[task]
    lr = d.learning_rates.get(method, DEFAULT_LR)
    whole = int(round(d.epochs))
    space = {
        "learning_rate": Dimension(low=lr / 5, high=min(lr * 3, 0.5), log=True),
        "epochs": Dimension(low=max(1, whole - 2), high=whole + 1),
        "batch_size": Dimension(choices=[d.batch_size // 2, d.batch_size]),
        "warmup_ratio": Dimension(low=0.0, high=0.1),
    }
    if method == "lora":
        space["lora_r"] = Dimension(choices=[4, 8, 16, 32])
        space["lora_dropout"] = Dimension(low=0.0, high=0.2)
    if method in ("prompt", "prefix"):
        space["num_virtual_tokens"] = Dimension(choices=[10, 20, 40])
    return space


def fixed_knobs(hp: Hyperparameters) -> dict[str, Any]:
    """The hyperparameters a user set to something other than the default (a stored spec, read back,
    marks every field as set, so "set" alone cannot tell)."""
    return {k: v for k, v in hp.model_dump().items() if v != Hyperparameters.model_fields[k].default}


def resolve_space(user: dict[str, Any], fixed: Hyperparameters, task: Task, method: str) -> dict[str, Dimension]:
    """Defaults, minus knobs fixed by the user, plus (replacing) the user's own dimensions."""
    given = fixed_knobs(fixed)
    space = {k: v for k, v in default_space(task, method).items() if k not in given}
    if fixed.max_steps is not None:
        space.pop("epochs", None)  # a fixed step count decides the run's length, not epochs
    for name, value in user.items():
        if name in given:
            raise InvalidInput(f"space.{name}: {name} is fixed in hyperparameters ({given[name]!r}) and searched "
                               "too; drop one of them", param=f"space.{name}")
        space[name] = parse_dimension(name, value)
    for name in space:
        if name in METHOD_KNOBS and method not in METHOD_KNOBS[name]:
            raise InvalidInput(f"space.{name}: method {method} does not use {name} (it is a knob of "
                               f"{' and '.join(sorted(METHOD_KNOBS[name]))})", param=f"space.{name}")
    if not space:
        raise InvalidInput("the search space is empty: every searchable hyperparameter is fixed; name one with "
                           "--space (e.g. learning_rate=1e-5:1e-3:log)", param="space")
    return space


def distributions(space: dict[str, Dimension], whole: dict[str, bool] = TUNABLE) -> dict[str, Any]:
    """The space as Optuna distributions (``Study.ask(fixed_distributions=...)``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.choices is not None:
            out[name] = CategoricalDistribution(dim.choices)
        elif whole[name]:
            out[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)  # type: ignore[arg-type]
        else:
            out[name] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)  # type: ignore[arg-type]
    return out
