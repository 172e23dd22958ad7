"""TEMP shim until the spool split lands: Failures lives in sidecar.core.failures."""

from sidecar.core.failures import Failures

__all__ = ["Failures"]
