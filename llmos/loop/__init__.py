"""The self-improvement loop of served task models (see docs/loop.md for how it decides)."""

from llmos.loop.canary import CanaryRouter
from llmos.loop.loop import Loop
from llmos.loop.policy import LoopSettings, Policies

__all__ = ["CanaryRouter", "Loop", "LoopSettings", "Policies"]
