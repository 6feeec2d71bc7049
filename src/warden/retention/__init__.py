"""Retention: time-to-live of finished work (`RetentionConfig`) and the pruner that deletes it
in bounded batches, from ``warden prune`` or periodically in worker processes."""

from __future__ import annotations

from warden.retention.config import RetentionConfig, parse_duration

__all__ = ["RetentionConfig", "parse_duration"]
