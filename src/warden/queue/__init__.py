"""Task leases: enqueue, lease, heartbeat, fence, retry, finish and reap."""

from warden.queue.lease import Lease, LeaseLost
from warden.queue.sql import SqlTaskQueue

__all__ = ["Lease", "LeaseLost", "SqlTaskQueue"]
