"""The spool's vocabulary, shared by the core's writer and the spool adapter."""

from sidecar.adapters.spool import Backlog, Batch, SpooledThread, SpoolError  # TEMP until split

__all__ = ["Backlog", "Batch", "SpoolError", "SpooledThread"]
