"""The agent loop with its journal and checkpoints."""

from warden.agent.journal import Journal
from warden.agent.loop import AgentLoop, Phase, TaskInput
from warden.agent.state import LoopState

__all__ = ["AgentLoop", "Journal", "LoopState", "Phase", "TaskInput"]
