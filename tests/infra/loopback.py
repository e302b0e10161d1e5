"""Helpers for tests that start real Debian binaries (Prometheus, Alertmanager) on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from checks.tools import tools_required


def require_binary(*names: str) -> str:
    """The first of `names` on PATH; without any, a failure where the binaries are required
    (REQUIRE_PROMETHEUS=1 or CI: checks.tools.tools_required) and a skip elsewhere."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = (
        f"none of {names} is installed (sudo apt-get install prometheus prometheus-alertmanager; "
        "`make test` does where it runs as root or with sudo)"
    )
    if tools_required():
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
