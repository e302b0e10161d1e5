"""Helpers for tests that start real Debian binaries (Prometheus, Alertmanager) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest


def require_binary(*names: str) -> str:
    """The first of `names` on PATH; without any, a failure where the binaries are required
    (REQUIRE_PROMETHEUS=1 or CI, as .ci/run sets) and a skip elsewhere."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"none of {names} is installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("REQUIRE_PROMETHEUS") == "1" or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
