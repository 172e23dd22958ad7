"""The spool's vocabulary, as the core declares it (:mod:`sidecar.core.spooling`)."""

from sidecar.core.spooling import MAX_BATCH_OPS, Backlog, Batch, SpooledThread, SpoolError

__all__ = ["MAX_BATCH_OPS", "Backlog", "Batch", "SpoolError", "SpooledThread"]
