"""Model functions for the fake LLM: what each turn answers depends on the task's input, so
many tasks of one cluster can each do their own thing and charge their own amount."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from warden.models.base import Message, ToolSpec
from warden.models.script import ScriptStep, ScriptToolCall

ModelFunction = Callable[[Sequence[Message], Sequence[ToolSpec]], ScriptStep]


def _charge(amount: int, seconds: float = 0.0) -> tuple[ScriptToolCall, ...]:
    return (ScriptToolCall(name="charge_card", arguments={"amount": amount, "seconds": seconds}),)


def by_input(charge_seconds: float = 0.3) -> ModelFunction:
    """``charge N``: charge N, then answer in a short stream. ``stream N``: charge N, then a
    3-second stream. ``tool N``: charge N, then N+1 over 30 s, then answer. ``slow N``: a
    4-second stream and no tool."""

    def turn(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ScriptStep:
        verb, _, number = next(m.content for m in messages if m.role == "user").partition(" ")
        amount = int(number)
        done = sum(1 for m in messages if m.role == "assistant")
        if verb == "slow":
            return ScriptStep(text="Streaming slowly to every client. " * 6, chunk_size=4, chunk_delay=0.02)
        if done == 0:
            return ScriptStep(text=f"Charging {amount}.", tool_calls=_charge(amount, charge_seconds))
        if verb == "stream" and done == 1:
            return ScriptStep(text="Now a long explanation " * 20, chunk_size=8, chunk_delay=0.05)
        if verb == "tool" and done == 1:
            return ScriptStep(text=f"Charging {amount + 1}, slowly.", tool_calls=_charge(amount + 1, 30))
        return ScriptStep(text=f"Charged {amount}, as asked. " * 4, chunk_size=12, chunk_delay=0.02)

    return turn
