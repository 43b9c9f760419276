"""The one registry rule every name -> thing table follows."""

from __future__ import annotations

import pytest

from llmos.errors import ConfigError, Conflict, InvalidInput
from llmos.registry import Registry


def test_the_same_value_again_is_a_no_op_and_another_is_a_conflict_unless_replaced() -> None:
    reg: Registry[str] = Registry("widget")
    reg.register("a", "one")
    reg.register("a", "one")  # a module imported twice
    with pytest.raises(Conflict, match="widget 'a' is already registered as 'one'"):
        reg.register("a", "two")
    assert reg.get("a") == "one"
    reg.register("a", "two", replace=True)
    assert reg.get("a") == "two"


def test_unknown_names_list_the_known_ones() -> None:
    reg: Registry[int] = Registry("widget", param="widget")
    reg.register("b", 2)
    reg.register("a", 1)
    with pytest.raises(InvalidInput, match="unknown widget 'c'; known widgets: a, b") as err:
        reg.get("c")
    assert err.value.details == {"param": "widget"}
    assert reg.names() == ["a", "b"] and reg.values() == [2, 1]  # values keep registration order
    assert "a" in reg and reg.find("c") is None and len(reg) == 2
    reg.unregister("a")
    reg.unregister("a")  # absent: nothing happens
    assert reg.names() == ["b"]
    empty: Registry[int] = Registry("policy", plural="policies", missing=ConfigError)
    with pytest.raises(ConfigError, match="unknown policy 'x'; known policies: none registered"):
        empty.get("x")


def test_every_builtin_registry_follows_the_rule() -> None:
    from llmos.engines.loader import ENGINES, register_engine
    from llmos.kernel.queue import FcfsPolicy, PriorityPolicy, register_policy
    from llmos.store.builtin import BUILTINS, register_builtin
    from llmos.train.methods import LoraMethod, METHODS, register_method
    from llmos.train.task_kinds import TASKS, register_task

    register_policy("fcfs", FcfsPolicy)  # the same again: fine
    with pytest.raises(Conflict):
        register_policy("fcfs", PriorityPolicy)
    register_engine("hf", ENGINES.get("hf"))
    with pytest.raises(Conflict):
        register_engine("hf", lambda path, **kw: None)  # type: ignore[arg-type,return-value]
    register_method(METHODS.get("lora"))
    with pytest.raises(Conflict):
        register_method(LoraMethod())  # another object under a taken name
    register_task(TASKS.get("sft"))
    register_builtin(BUILTINS.get("minilm-l6"))
    assert [b.name for b in BUILTINS.values()] == ["smollm2-135m-instruct", "minilm-l6"]
