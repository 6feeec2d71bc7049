"""Chooses the event bus from the configuration: Redis in cluster mode (``redis_url`` set),
otherwise the in-process bus that polls the log for events written by other processes."""

from __future__ import annotations

from warden.config import WardenConfig
from warden.events.bus import EventBus, LocalEventBus, LogReader


def build_event_bus(config: WardenConfig, reader: LogReader) -> EventBus:
    if config.redis_url:
        from warden.events.redis_bus import RedisEventBus

        return RedisEventBus(
            config.redis_url,
            reader,
            poll_interval=config.worker.poll_interval,
            buffer=config.events.subscriber_buffer,
        )
    return LocalEventBus(
        reader, poll_interval=config.worker.poll_interval, buffer=config.events.subscriber_buffer
    )
