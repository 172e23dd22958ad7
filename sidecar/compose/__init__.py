"""The composition root: every part built from the loaded config, in one place.

Nothing else constructs adapters or registers collectors. :func:`assemble`
opens the state under ``state_dir`` and builds the core and its metrics;
:func:`build_app` the HTTP side (:mod:`.assembly`); :func:`live_source` and
:func:`replay_source` the two event sources, and :func:`build_send_path` what
runs beside the live accounts (:mod:`.sources`). ``app`` runs what this
package builds.
"""

from sidecar.compose.assembly import (
    Assembly,
    assemble,
    build_app,
    build_authenticator,
    build_repairs,
    build_store,
)
from sidecar.compose.sources import (
    EventSource,
    build_send_path,
    live_source,
    replay_control,
    replay_source,
)

__all__ = [
    "Assembly",
    "EventSource",
    "assemble",
    "build_app",
    "build_authenticator",
    "build_repairs",
    "build_send_path",
    "build_store",
    "live_source",
    "replay_control",
    "replay_source",
]
