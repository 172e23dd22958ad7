"""wa-sidecar: WhatsApp linked-device sessions, with their health made visible."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wa-sidecar")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
