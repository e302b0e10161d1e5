"""Alert delivery end to end, with the real binaries on loopback:

    a metrics endpoint serving kube-state-metrics' and DCGM's series (the state of a cluster whose
    inference pods are all down, and one GPU with a nearly full frame buffer)
    -> Prometheus (Debian 2.42) scraping it and evaluating infra/alerts.py's rules
    -> Alertmanager (Debian prometheus-alertmanager) with infra/alerting.py's configuration
    -> a webhook sink on loopback, one URL per receiver.

One receiver of each type: the page reaches PagerDuty's Events API (routing key read from the
credential file, the way the pod reads its mounted Secret) and the webhook (bearer token from its
file), the warning reaches Slack (incoming-webhook URL from its file) and the webhook, the inhibited
alert is held back, and the page is resolved on both once the pods are back.

Only the `for` durations and Alertmanager's timers are shortened (keyword arguments of the same
functions) and PagerDuty's endpoint (`global.pagerduty_url`) points at the sink; the expressions,
labels, routes, matchers, templates and inhibition rules are the deployed ones.
Every wait is a bounded poll: the test never depends on how fast the machine is.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import free_port, require_binary, stop

from infra import alerting, dashboard
from infra.alerts import alert_rule_groups
from infra.config import AlertReceiver

NAMESPACE = "inference"
NODE = "ip-10-0-12-34.ec2.internal"
DEPLOYMENT = "embeddings"
TOKEN = "webhook-token-0123456789"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
FAST = alerting.Timing(group_wait="1s", group_interval="1s", repeat_interval="1h")
TIMEOUT_S = 120.0
"""Generous upper bound of every wait; the test finishes as soon as each condition holds."""


@dataclass
class Sink:
    """The cluster's metrics (GET /metrics) and every notification received (any POST)."""

    available_replicas: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def exposition(self) -> str:
        deploy = f'namespace="{NAMESPACE}",deployment="{DEPLOYMENT}"'
        gpu = f'gpu="0",Hostname="{NODE}",UUID="GPU-1"'
        return (
            f"kube_deployment_spec_replicas{{{deploy}}} 2\n"
            f"kube_deployment_status_replicas_available{{{deploy}}} {self.available_replicas}\n"
            f"DCGM_FI_DEV_FB_USED{{{gpu}}} 23000\n"
            f"DCGM_FI_DEV_FB_FREE{{{gpu}}} 500\n"
            # Two other GPUs of the node report XID errors: one page for both.
            f'DCGM_FI_DEV_XID_ERRORS{{gpu="1",Hostname="{NODE}",UUID="GPU-2"}} 79\n'
            f'DCGM_FI_DEV_XID_ERRORS{{gpu="2",Hostname="{NODE}",UUID="GPU-3"}} 48\n'
        )

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.notifications)


def _handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = sink.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with sink.lock:
                sink.notifications.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        **payload,
                    }
                )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    state = Sink()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _poll(what: str, probe: Callable[[], Any], logs: list[Path]) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            found = probe()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    raise AssertionError(f"{what}: not seen within {TIMEOUT_S:.0f} s\n{tails}")


def _alerts(notification: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alertname"]: a for a in notification["alerts"]}


def test_page_and_ticket_delivered_then_resolved(tmp_path: Path, sink: tuple[Sink, str]) -> None:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager", "alertmanager")
    state, address = sink
    receivers = (
        AlertReceiver("oncall", "pagerduty", ("page",), secret=ROUTING_KEY),
        AlertReceiver(
            "chat", "slack", ("ticket",), channel="#gpu", secret=f"http://{address}/slack"
        ),
        AlertReceiver(
            "bus", "webhook", ("page", "ticket"), url=f"http://{address}/hook/bus", secret=TOKEN
        ),
    )

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in alerting.secret_files(receivers).items():
        (secrets / name).write_text(value)
    am_config = alerting.alertmanager_config(
        receivers, secrets_dir=str(secrets), page=FAST, ticket=FAST
    )
    # The one substitution: PagerDuty's Events API endpoint is the loopback sink.
    am_config["global"]["pagerduty_url"] = f"http://{address}/pagerduty"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    rules = alert_rule_groups(
        namespace=NAMESPACE,
        deployment=DEPLOYMENT,
        hpa=DEPLOYMENT,
        not_ready_for="1s",
        unavailable_for="1s",
        gpu_memory_for="1s",
    )
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    am_port, prom_port = free_port(), free_port()
    prom_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [
            {"job_name": "cluster-state", "static_configs": [{"targets": [address]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))

    logs = [tmp_path / "alertmanager.log", tmp_path / "prometheus.log"]
    am = _start(
        [
            alertmanager,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # no gossip port: a single loopback instance
        ],
        logs[0],
    )
    prom = _start(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        logs[1],
    )
    try:
        _run_scenario(state, am_port, prom_port, logs)
    finally:
        stop(prom)
        stop(am)


def _at(state: Sink, path: str) -> list[dict[str, Any]]:
    return [n for n in state.received() if n["path"] == path]


def _run_scenario(state: Sink, am_port: int, prom_port: int, logs: list[Path]) -> None:
    summary = f"No ready inference pod in {NAMESPACE}/{DEPLOYMENT}"

    def pagerduty(action: str, dedup_key: str | None = None) -> dict[str, Any] | None:
        for n in _at(state, "/pagerduty"):
            if n["event_action"] != action:
                continue
            if dedup_key == n["dedup_key"] or (
                dedup_key is None and n["payload"]["summary"] == summary
            ):
                return n
        return None

    def webhook(alertname: str, status: str) -> dict[str, Any] | None:
        for n in _at(state, "/hook/bus"):
            alert = _alerts(n).get(alertname)
            if alert is not None and alert["status"] == status:
                return n
        return None

    # The page: PagerDuty's Events API v2 with the routing key read from the credential file.
    page = _poll("InferenceUnavailable paged", lambda: pagerduty("trigger"), logs)
    assert page["routing_key"] == ROUTING_KEY
    assert page["payload"]["severity"] == alerting.PAGE_SEVERITY
    assert "alertname = InferenceUnavailable" in page["payload"]["custom_details"]["firing"]
    assert page["payload"]["custom_details"]["firing"].count("alertname = ") == 1

    # Two alerts in one group have no common summary: the page names the alert and counts them
    # (PagerDuty refuses an event without a summary).
    def xid_page() -> dict[str, Any] | None:
        return next(
            (
                n
                for n in _at(state, "/pagerduty")
                if n["payload"]["summary"] == "GPUXidError: 2 firing"
            ),
            None,
        )

    xid = _poll("GPUXidError paged once for two GPUs", xid_page, logs)
    assert xid["dedup_key"] != page["dedup_key"], "one incident per alert group"

    # The same page on the generic webhook, with its bearer token and the alert's labels.
    hooked = _poll(
        "InferenceUnavailable on the webhook",
        lambda: webhook("InferenceUnavailable", "firing"),
        logs,
    )
    assert hooked["receiver"] == "bus"
    assert hooked["authorization"] == f"Bearer {TOKEN}", "the credential file is sent as the token"
    labels = _alerts(hooked)["InferenceUnavailable"]["labels"]
    assert labels["severity"] == alerting.PAGE_SEVERITY
    assert (labels["namespace"], labels["deployment"]) == (NAMESPACE, DEPLOYMENT)
    assert hooked["groupLabels"] == {"alertname": "InferenceUnavailable", "namespace": NAMESPACE}

    # The ticket: Slack, at the incoming-webhook URL read from its file, in the configured channel.
    ticket = _poll(
        "GPUMemoryNearlyFull ticketed", lambda: next(iter(_at(state, "/slack")), None), logs
    )
    assert ticket["channel"] == "#gpu"
    assert ticket["attachments"][0]["title"] == "[FIRING] GPUMemoryNearlyFull (warning)"
    assert f"GPU 0 of {NODE} memory" in ticket["attachments"][0]["text"]
    _poll(
        "GPUMemoryNearlyFull on the webhook", lambda: webhook("GPUMemoryNearlyFull", "firing"), logs
    )

    # InferencePodsNotReady fires too (2 wanted, 0 available) but adds nothing while no pod is
    # available: Alertmanager holds it back, citing InferenceUnavailable.
    def inhibited() -> list[str] | None:
        response = httpx.get(f"http://127.0.0.1:{am_port}/api/v2/alerts", timeout=5)
        for alert in response.json():
            if alert["labels"]["alertname"] == "InferencePodsNotReady":
                return alert["status"]["inhibitedBy"] or None
        return None

    _poll("InferencePodsNotReady inhibited", inhibited, logs)
    assert not any("InferencePodsNotReady" in _alerts(n) for n in _at(state, "/hook/bus")), (
        "the inhibited alert was notified"
    )
    # The dashboard's "Firing alerts" annotation, run on this Prometheus, finds the namespace's
    # page and the GPU alerts, which carry no namespace label.
    [annotation] = dashboard.dashboard(namespace=NAMESPACE)["annotations"]["list"]
    query = annotation["target"]["expr"].replace("$namespace", NAMESPACE)
    response = httpx.get(
        f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": query}, timeout=5
    )
    shown = {r["metric"]["alertname"] for r in response.json()["data"]["result"]}
    assert {"InferenceUnavailable", "GPUMemoryNearlyFull", "GPUXidError"} <= shown, shown

    # No page for a warning, no Slack ticket for a page.
    assert all(n["payload"]["severity"] == "critical" for n in _at(state, "/pagerduty"))
    assert not any("InferenceUnavailable" in str(n) for n in _at(state, "/slack"))

    state.available_replicas = 2

    _poll(
        "InferenceUnavailable resolved at PagerDuty (the incident it opened)",
        lambda: pagerduty("resolve", page["dedup_key"]),
        logs,
    )
    recovery = _poll(
        "InferenceUnavailable resolved on the webhook",
        lambda: webhook("InferenceUnavailable", "resolved"),
        logs,
    )
    assert recovery["status"] == "resolved"
    assert recovery["authorization"] == f"Bearer {TOKEN}"
