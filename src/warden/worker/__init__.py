"""Workers: lease tasks, run the agent loop, heartbeat, honour cancel and shutdown."""

from warden.worker.worker import StopReason, Worker, default_worker_id

__all__ = ["StopReason", "Worker", "default_worker_id"]
