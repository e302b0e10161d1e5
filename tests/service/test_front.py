"""The front layer decides what a request counts toward and needs from its endpoint's flags in the
table, never from its path: only routes that queue model work move inference_requests_in_flight
(the HPA's main signal), and an alias (/embeddings) is counted, labelled and guarded exactly as
its /v1 form. The real endpoint table, each handler replaced by one that records the gauge while
the request is being served."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from service import contract
from service.app import error_reply
from service.front import Call, Endpoint, FrontDoor, Reply
from service.metrics import Metrics
from service.routes import ENDPOINTS
from service.runtime import Runtime
from service.settings import Settings

KEY = "sk-front"
# The contract's list is what infra's alerts and dashboard read: the table's flags must equal it.
INFERENCE = set(contract.INFERENCE_PATHS)


class Recorded:
    def __init__(self, keys: frozenset[str] = frozenset()) -> None:
        self.runtime = Runtime(Settings(), Metrics(), keys)
        self.in_flight_while_served: dict[str, float] = {}
        self.front = FrontDoor(
            [self._recording(endpoint) for endpoint in ENDPOINTS],
            self._not_found,
            self.runtime,
            error_reply,
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.runtime.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def _recording(self, endpoint: Endpoint) -> Endpoint:
        async def handler(call: Call) -> Reply:
            gauge = self.metric(contract.REQUESTS_IN_FLIGHT)
            self.in_flight_while_served[call.scope["path"]] = gauge
            return Reply(b"{}")

        return dataclasses.replace(endpoint, handler=handler)

    @staticmethod
    async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> int:
        scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        asyncio.run(self.front(scope, receive, send))
        status: int = sent[0]["status"]
        return status


def served_paths() -> list[tuple[Endpoint, str]]:
    """Every (endpoint, path it answers), a path parameter filled in."""
    return [
        (endpoint, path.replace("{model}", "some/model"))
        for endpoint in ENDPOINTS
        for path in (endpoint.path, *endpoint.aliases)
    ]


def test_only_model_work_moves_the_in_flight_gauge() -> None:
    recorded = Recorded()
    for endpoint, path in served_paths():
        assert recorded.call(endpoint.method, path) == 200, path
        expected = 1.0 if endpoint.inference else 0.0
        assert recorded.in_flight_while_served[path] == expected, path
        assert recorded.metric(contract.REQUESTS_IN_FLIGHT) == 0.0
    counted = {endpoint.path for endpoint in ENDPOINTS if endpoint.inference}
    assert counted == INFERENCE
    # The model list is under /v1 and cheap: it must never scale GPU pods.
    assert recorded.in_flight_while_served[contract.MODELS_PATH] == 0.0
    assert recorded.in_flight_while_served["/models/some/model"] == 0.0


def test_an_alias_counts_exactly_as_its_v1_form() -> None:
    recorded = Recorded()
    assert recorded.call("POST", contract.EMBEDDINGS_PATH) == 200
    assert recorded.call("POST", "/embeddings") == 200
    assert recorded.call("GET", "/models") == 200
    assert recorded.in_flight_while_served["/embeddings"] == 1.0
    labels = {"route": contract.EMBEDDINGS_PATH, "status": "200"}
    assert recorded.metric(contract.REQUESTS_TOTAL, labels) == 2
    count = f"{contract.REQUEST_DURATION_SECONDS}_count"
    assert recorded.metric(count, {"route": contract.EMBEDDINGS_PATH}) == 2
    assert recorded.metric(count, {"route": contract.MODELS_PATH}) == 1
    assert recorded.metric(contract.REQUESTS_TOTAL, {"route": "/embeddings", "status": "200"}) == 0


def test_keys_are_asked_where_the_table_says() -> None:
    recorded = Recorded(frozenset({KEY}))
    for endpoint, path in served_paths():
        status = recorded.call(endpoint.method, path)
        assert status == (401 if endpoint.needs_key else 200), path
        keyed = recorded.call(endpoint.method, path, {"authorization": f"Bearer {KEY}"})
        assert keyed == 200, path
    guarded = {endpoint.path for endpoint in ENDPOINTS if endpoint.needs_key}
    assert guarded == {*INFERENCE, contract.MODELS_PATH, f"{contract.MODELS_PATH}/{{model}}"}


@pytest.mark.parametrize("path", ["/v1/unknown", "/nothing"])
def test_a_path_outside_the_table_is_neither_work_nor_guarded(path: str) -> None:
    recorded = Recorded(frozenset({KEY}))
    assert recorded.call("POST", path) == 404
    assert recorded.metric(contract.REQUESTS_TOTAL, {"route": "other", "status": "404"}) == 1
