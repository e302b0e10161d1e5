"""Start-up: /health answers while the model loads, /ready and the API wait for it, and the loaded
heap is frozen; a model that cannot load stops the process with exit code 1 and says why (and
nothing is downloaded)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from service_testkit import LiveServer, free_port, wait_ready

from service import contract
from service.encoder import Encoder

ROOT = Path(__file__).resolve().parents[2]


def test_probes_during_loading(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    loaded = threading.Event()

    def slow_load() -> Encoder:
        loaded.wait(30)
        return tiny_encoder

    server = start_server(slow_load, wait=False)
    try:
        assert httpx.get(f"{server.base_url}{contract.HEALTH_PATH}").status_code == 200
        ready = httpx.get(f"{server.base_url}{contract.READY_PATH}")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        embed = httpx.post(f"{server.base_url}{contract.EMBEDDINGS_PATH}", json={"input": "x"})
        assert embed.status_code == 503
        assert server.metric(contract.READY) == 0
    finally:
        gc.unfreeze()  # servers of earlier tests (same process) froze the heap already
        loaded.set()
    wait_ready(server.base_url)
    assert server.metric(contract.READY) == 1
    # What loading left is out of every later collection: no full-heap scans while serving.
    assert gc.get_freeze_count() > 0
    embed = httpx.post(f"{server.base_url}{contract.EMBEDDINGS_PATH}", json={"input": "x"})
    assert embed.status_code == 200


def test_a_model_that_cannot_load_exits_1(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path),  # an empty cache: the model is not there
        contract.ENV_MODEL: "nobody/no-such-model",
    }
    env.pop("HF_HUB_OFFLINE", None)  # the server itself must not try the network
    result = subprocess.run(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not in the Hugging Face cache" in result.stderr
