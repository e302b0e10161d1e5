"""The README's API examples (curl, each client) run against a live server on the bundled MiniLM."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from service_testkit import LiveServer

from service import contract
from service.encoder import Encoder

README = Path(__file__).resolve().parents[2] / "README.md"


def api_section() -> str:
    text = README.read_text()
    match = re.search(r"^## API\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README has no '## API' section"
    return match.group(1)


@pytest.fixture(scope="module")
def minilm_server(start_server: Callable[..., LiveServer], minilm_encoder: Encoder) -> LiveServer:
    return start_server(minilm_encoder)


def test_curl_example(minilm_server: LiveServer) -> None:
    curl = re.search(r"curl -s (\S+) .*?-d '(.*?)'", api_section(), re.S)
    assert curl, "no curl example"
    url, body = curl.groups()
    assert url == f"http://127.0.0.1:{contract.SERVICE_PORT}{contract.EMBEDDINGS_PATH}"
    response = httpx.post(
        f"{minilm_server.base_url}{contract.EMBEDDINGS_PATH}", json=json.loads(body)
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == len(json.loads(body)["input"])


def client_examples() -> dict[str, str]:
    """Each client's Python example, by the name in bold above it."""
    blocks = re.findall(
        r"\*\*(\w+)\*\* \(`pip install [^`]+`\).*?```python\n(.*?)```", api_section(), re.S
    )
    return dict(blocks)


def test_the_api_section_shows_each_client() -> None:
    assert set(client_examples()) == {"openai", "LangChain", "Haystack"}


@pytest.mark.parametrize("client", ["openai", "LangChain", "Haystack"])
def test_client_example(minilm_server: LiveServer, offline_tiktoken: Path, client: str) -> None:
    code = client_examples()[client].replace(
        f"http://127.0.0.1:{contract.SERVICE_PORT}", minilm_server.base_url
    )
    namespace: dict = {}
    exec(compile(code, f"README.md ({client})", "exec"), namespace)
    assert len(namespace["vector"]) == 384
