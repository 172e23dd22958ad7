"""The application core: what the sidecar does with events, independent of where they
come from and where results go. It owns the pipeline, the account registry and its
verdicts, the storage writer's policy, supervision, probes, leases, re-pairs and
replay, and declares the ports (:mod:`sidecar.core.ports`) that adapters implement.
It imports the domain and nothing outward (see docs/architecture.md)."""
