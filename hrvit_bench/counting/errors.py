"""How counting fails: loudly, naming the operator, never as a zero."""
from __future__ import annotations


class CountingError(RuntimeError):
    """The engine could not count a call (its rule failed, or nothing real to fall back on): never a zero."""


class NeedsRealTensors(CountingError):
    """The meta engine failed on a model that is itself on meta, and nothing says how to build a real one."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"the meta engine cannot run {op} ({reason}) and the model is on the meta device, with "
                         "nothing real to count instead: count a copy of it on the CPU")
        self.op, self.reason = op, reason


class MetaCallFailed(RuntimeError):
    """A call that cannot run on meta tensors; the fvcore engine on real tensors may still count it."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"the meta engine cannot run {op}: {reason}")
        self.op, self.reason = op, reason
