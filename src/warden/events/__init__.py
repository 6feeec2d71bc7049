"""Typed task events: the append-only log, live fan-out and resumable streams."""

from warden.events.bus import EventBus, LocalEventBus, Subscription
from warden.events.log import EventLog, Guard, Tx, read_events
from warden.events.stream import flatten, follow_batches
from warden.events.types import TERMINAL_EVENTS, Event, EventType

__all__ = [
    "TERMINAL_EVENTS",
    "Event",
    "EventBus",
    "EventLog",
    "EventType",
    "Guard",
    "LocalEventBus",
    "Subscription",
    "Tx",
    "flatten",
    "follow_batches",
    "read_events",
]
