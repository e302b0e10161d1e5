"""The bundled embedding model server: OpenAI-compatible HTTP -> dynamic batcher -> encoder."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("gpu-inference")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
