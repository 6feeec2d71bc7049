"""Use cases behind the API, the CLI and the protocol adapters."""

from warden.service.agents import AgentCatalog
from warden.service.keys import KeyService, Principal
from warden.service.sessions import Multitask, SessionService
from warden.service.tasks import Submission, TaskService

__all__ = [
    "AgentCatalog",
    "KeyService",
    "Multitask",
    "Principal",
    "SessionService",
    "Submission",
    "TaskService",
]
