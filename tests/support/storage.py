"""A sidecar that stores real messages in one backend, as the storage tests build it, and
ways to drain it and read its storage metrics."""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

from sidecar.adapters.spool import Spool
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.compose import build_store
from sidecar.core.clock import ReplayClock
from sidecar.core.service import Sidecar
from sidecar.core.storage import Storage
from sidecar.metrics.collectors import ConflictCollector, SpoolCollector, StoreCollector
from sidecar.metrics.registry import Metrics

from .backends import Backend
from .config import ConfigFactory


def make_sidecar(
    make_config: ConfigFactory, backend: Backend, write_timeout: str = "10s"
) -> Sidecar:
    """Account ``sales``, storing in ``backend``, thread updates not paced."""
    loaded = make_config([{"id": "sales"}], store=backend.store_config(write_timeout))
    storage = Storage(Spool(backend.state_dir, thread_interval_s=0.0), build_store(loaded))
    return Sidecar(
        loaded.config.account_settings(),
        ReplayClock(speed=0),
        SqliteStateStore(backend.state_dir),
        storage=storage,
    )


def storage_registry(sidecar: Sidecar) -> CollectorRegistry:
    """The storage's metrics, registered as the composition root registers them."""
    assert sidecar.storage is not None
    storage, accounts = sidecar.storage, sidecar.account_ids
    metrics = Metrics(
        [
            StoreCollector(storage),
            SpoolCollector(storage, accounts),
            ConflictCollector(storage, accounts),
        ]
    )
    return metrics.registry


async def drain(sidecar: Sidecar, batches: int = 100) -> None:
    """Write batch after batch until the spool is empty; fail after ``batches``."""
    storage = sidecar.storage
    assert storage is not None
    for _ in range(batches):
        await storage.writer.drain_once()
        if storage.spool.is_empty():
            return
    raise AssertionError(f"the spool did not drain in {batches} batches")


async def close(sidecar: Sidecar) -> None:
    assert sidecar.storage is not None
    await sidecar.storage.close()
    sidecar.close()
