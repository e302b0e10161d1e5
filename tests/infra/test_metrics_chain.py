"""The metrics chain against a real Prometheus, with the program's own jobs and adapter rules.

    live `python -m service` under a held load, and a DCGM exporter stand-in
    -> Prometheus (the Debian binary) running infra/scrape.py's jobs
    -> each adapter rule's metricsQuery, expanded as prometheus-adapter expands it for the pods
    -> the per-pod values the HPA would read from the custom metrics API.

Discovery is the one substitution: Debian's Prometheus is built without Kubernetes service discovery
(`kubernetes_sd_configs` does not even parse), so each job runs unchanged except that static targets
carrying the `__meta_kubernetes_*` labels pod discovery would set replace its discovery block; the
relabelling, `honor_labels` and paths are the deployed ones.

The test skips when the `prometheus` binary is missing, unless REQUIRE_PROMETHEUS=1 (set by
.ci/run): then it fails, so CI can never pass without having run the chain.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import free_port, require_binary, stop

from infra import adapter_rules, scrape
from service import contract

NAMESPACE = "inference"
APP_NAME = "embedding-server"
POD_BUSY = "embedding-server-5c9d7b-busy1"
POD_IDLE = "embedding-server-5c9d7b-idle2"
DCGM_NAMESPACE = "gpu-system"
DCGM_POD = "dcgm-exporter-x7k2p"
GPU_NODE = "ip-10-0-12-34.ec2.internal"
SERVED_MODEL = "chain-test-model"

LOAD_CLIENTS = 4
INPUTS_PER_REQUEST = 48
GPU_UTIL = {POD_BUSY: 73.0, POD_IDLE: 41.0}
IDLE_GPU_UTIL = 3.0
"""A third GPU on the node with no pod attached: it must not be attributed to anyone."""

NAIVE_DCGM_JOB = "dcgm-naive-pod-labels"
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT_S = 180.0
CHAIN_TIMEOUT_S = 40.0


def _wait_for(
    what: str, probe: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if probe():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s")


# --- Discovery stand-in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodTarget:
    """What `kubernetes_sd_configs: role: pod` would discover for one container port of one pod."""

    address: str
    namespace: str
    pod: str
    app_name: str
    port_name: str
    container: str = "server"
    node: str = GPU_NODE
    phase: str = "Running"

    def meta_labels(self) -> dict[str, str]:
        return {
            scrape.META_NAMESPACE: self.namespace,
            scrape.META_POD_NAME: self.pod,
            scrape.META_NODE_NAME: self.node,
            scrape.META_POD_PHASE: self.phase,
            scrape.META_CONTAINER_NAME: self.container,
            scrape.META_PORT_NAME: self.port_name,
            scrape.META_APP_NAME_LABEL: self.app_name,
        }


def with_static_targets(job: dict[str, Any], targets: Sequence[PodTarget]) -> dict[str, Any]:
    """The job unchanged except that static targets carrying discovery's meta labels replace
    discovery."""
    assert "kubernetes_sd_configs" in job, f"job {job['job_name']} no longer uses pod discovery"
    static = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    static["static_configs"] = [
        {"targets": [target.address], "labels": target.meta_labels()} for target in targets
    ]
    return static


def naive_dcgm_job(job: dict[str, Any]) -> dict[str, Any]:
    """The common configuration this program avoids: the exporter's own pod/namespace as target
    labels."""
    naive = copy.deepcopy(job)
    naive["job_name"] = NAIVE_DCGM_JOB
    for rule in naive["relabel_configs"]:
        if rule.get("target_label") == "exporter_pod":
            rule["target_label"] = "pod"
        if rule.get("target_label") == "exporter_namespace":
            rule["target_label"] = "namespace"
    return naive


# --- Fake DCGM exporter ---------------------------------------------------------------------------


def dcgm_exposition() -> str:
    """Samples shaped like dcgm-exporter's, with pod attribution from the kubelet pod-resources
    API."""
    lines = [
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    ]
    gpus: list[tuple[int, str | None, float]] = [
        (0, POD_BUSY, GPU_UTIL[POD_BUSY]),
        (1, POD_IDLE, GPU_UTIL[POD_IDLE]),
        (2, None, IDLE_GPU_UTIL),
    ]
    for index, pod, value in gpus:
        labels = (
            f'gpu="{index}",UUID="GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd",'
            f'device="nvidia{index}",modelName="NVIDIA A10G",Hostname="{GPU_NODE}",'
            f'DCGM_FI_DRIVER_VERSION="550.127.05"'
        )
        if pod is not None:
            labels += f',container="server",namespace="{NAMESPACE}",pod="{pod}"'
        lines.append(f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


class _DcgmHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = dcgm_exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every second would flood the test output."""


# --- Fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceInstance:
    pod: str
    api_url: str
    metrics_address: str


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return require_binary("prometheus")


@pytest.fixture(scope="module")
def services(prometheus_binary: str) -> Iterator[dict[str, ServiceInstance]]:
    """Two live servers, standing in for two pods of the Deployment (one gets load, one stays
    idle)."""
    procs: list[subprocess.Popen[bytes]] = []
    instances: dict[str, ServiceInstance] = {}
    logs = tempfile.TemporaryDirectory(prefix="chain-service-")
    try:
        for pod in (POD_BUSY, POD_IDLE):
            api_port, metrics_port = free_port(), free_port()
            env = {
                **os.environ,
                "EMBED_HOST": "127.0.0.1",
                "EMBED_PORT": str(api_port),
                contract.ENV_METRICS_PORT: str(metrics_port),
                contract.ENV_SERVED_MODEL_NAME: SERVED_MODEL,
                "EMBED_TORCH_THREADS": "1",
                # Readiness, not speed, is what the chain needs; skipping warm-up halves start-up.
                "EMBED_WARMUP": "false",
                "EMBED_ACCESS_LOG": "false",
                # The held load must be held, whatever this machine's speed: 4 x 48 inputs are
                # ~2 s of queued work on one busy CPU thread, which admission's 1 s target
                # refuses (admission is tested in tests/service).
                contract.ENV_MAX_QUEUE_SECONDS: "600",
                # Teardown need not wait for load balancers that do not exist here.
                contract.ENV_DRAIN_DELAY_SECONDS: "0",
                contract.ENV_DRAIN_TIMEOUT_SECONDS: "1",
                "HF_HUB_OFFLINE": "1",
            }
            log = open(Path(logs.name) / f"{pod}.log", "wb")  # noqa: SIM115 (closed with the dir)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
            instances[pod] = ServiceInstance(
                pod=pod,
                api_url=f"http://127.0.0.1:{api_port}",
                metrics_address=f"127.0.0.1:{metrics_port}",
            )
        for proc, instance in zip(procs, instances.values(), strict=True):
            _wait_for(
                f"service {instance.pod} (log: {logs.name})",
                lambda url=instance.api_url: (
                    httpx.get(url + contract.READY_PATH).status_code == 200
                ),
                READY_TIMEOUT_S,
                proc,
            )
        yield instances
    finally:
        for proc in procs:
            stop(proc)
        logs.cleanup()


@pytest.fixture(scope="module")
def fake_dcgm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DcgmHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chain_scrape_configs(
    services: dict[str, ServiceInstance], dcgm_address: str
) -> list[dict[str, Any]]:
    settings = scrape.ScrapeSettings(
        inference_namespace=NAMESPACE,
        inference_app_name=APP_NAME,
        dcgm_namespace=DCGM_NAMESPACE,
        scrape_interval=SCRAPE_INTERVAL,
    )
    busy, idle = services[POD_BUSY], services[POD_IDLE]
    inference_targets = [
        PodTarget(busy.metrics_address, NAMESPACE, POD_BUSY, APP_NAME, contract.METRICS_PORT_NAME),
        PodTarget(idle.metrics_address, NAMESPACE, POD_IDLE, APP_NAME, contract.METRICS_PORT_NAME),
        # The API port also serves /metrics for local use; scraping it too would double every sum.
        PodTarget(
            busy.api_url.removeprefix("http://"), NAMESPACE, POD_BUSY, APP_NAME, contract.PORT_NAME
        ),
        # Another app in the namespace, and a finished pod of ours: neither may be scraped.
        PodTarget(
            idle.metrics_address, NAMESPACE, "batch-job-1", "batch-job", contract.METRICS_PORT_NAME
        ),
        PodTarget(
            busy.metrics_address,
            NAMESPACE,
            "embedding-server-old",
            APP_NAME,
            contract.METRICS_PORT_NAME,
            phase="Succeeded",
        ),
    ]
    dcgm_targets = [
        PodTarget(
            dcgm_address,
            DCGM_NAMESPACE,
            DCGM_POD,
            scrape.DCGM_APP_NAME,
            scrape.DCGM_METRICS_PORT_NAME,
            container="exporter",
        )
    ]
    jobs = {job["job_name"]: job for job in scrape.scrape_jobs(settings)}
    assert set(jobs) == {scrape.INFERENCE_JOB, scrape.DCGM_JOB}
    return [
        with_static_targets(jobs[scrape.INFERENCE_JOB], inference_targets),
        with_static_targets(jobs[scrape.DCGM_JOB], dcgm_targets),
        with_static_targets(naive_dcgm_job(jobs[scrape.DCGM_JOB]), dcgm_targets),
    ]


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, services: dict[str, ServiceInstance], fake_dcgm: str
) -> Iterator[str]:
    workdir = tempfile.TemporaryDirectory(prefix="chain-prometheus-")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": chain_scrape_configs(services, fake_dcgm),
    }
    config_path = Path(workdir.name) / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={Path(workdir.name) / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(Path(workdir.name) / "prometheus.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for("prometheus", lambda: httpx.get(url + "/-/ready").status_code == 200, 30, proc)
        yield url
    finally:
        stop(proc, timeout=15)
        workdir.cleanup()


# --- Queries --------------------------------------------------------------------------------------


def instant_query(prometheus_url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"query {query!r} failed: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def hpa_view(prometheus_url: str, api_name: str, pods: Sequence[str]) -> dict[str, float]:
    """The per-pod values prometheus-adapter returns to the HPA for `pods/*/<api_name>`."""
    rule = adapter_rules.rule_for(api_name).to_adapter_rule()
    query = adapter_rules.expand_metrics_query(rule, NAMESPACE, pods)
    return {
        sample["metric"]["pod"]: float(sample["value"][1])
        for sample in instant_query(prometheus_url, query)
    }


def wait_for_view(
    prometheus_url: str,
    api_name: str,
    pods: Sequence[str],
    done: Callable[[dict[str, float]], bool],
) -> dict[str, float]:
    deadline = time.monotonic() + CHAIN_TIMEOUT_S
    view: dict[str, float] = {}
    while time.monotonic() < deadline:
        view = hpa_view(prometheus_url, api_name, pods)
        if done(view):
            return view
        time.sleep(0.5)
    raise AssertionError(f"{api_name}: HPA view never reached the expected state; last: {view}")


class HeldLoad:
    """LOAD_CLIENTS clients that each keep one embeddings request in flight until stopped."""

    def __init__(self, api_url: str) -> None:
        self._url = api_url + contract.EMBEDDINGS_PATH
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(LOAD_CLIENTS)
        ]
        self.errors: list[str] = []
        self.completed = 0

    def _client(self) -> None:
        text = (
            "the quick brown fox jumps over the lazy dog while the embedding server stays busy " * 3
        )
        payload = {"model": SERVED_MODEL, "input": [text] * INPUTS_PER_REQUEST}
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                response = client.post(self._url, json=payload)
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code}: {response.text[:200]}")
                    return
                self.completed += 1

    def __enter__(self) -> HeldLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


# --- Tests ----------------------------------------------------------------------------------------


def test_only_the_intended_targets_are_scraped(prometheus: str) -> None:
    up = wait_for_targets(prometheus)
    assert up == {
        (scrape.INFERENCE_JOB, POD_BUSY): 1.0,
        (scrape.INFERENCE_JOB, POD_IDLE): 1.0,
        (scrape.DCGM_JOB, ""): 1.0,
        (NAIVE_DCGM_JOB, DCGM_POD): 1.0,
    }


def wait_for_targets(prometheus_url: str) -> dict[tuple[str, str], float]:
    # Prometheus applies discovered (here: static) targets on a 5 s throttle.
    deadline = time.monotonic() + CHAIN_TIMEOUT_S
    up: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        up = {
            (sample["metric"]["job"], sample["metric"].get("pod", "")): float(sample["value"][1])
            for sample in instant_query(prometheus_url, "up")
        }
        if len(up) >= 4 and all(value == 1.0 for value in up.values()):
            return up
        time.sleep(0.5)
    return up


def test_in_flight_requests_per_pod_follow_a_held_load(
    prometheus: str, services: dict[str, ServiceInstance]
) -> None:
    wait_for_targets(prometheus)
    pods = (POD_BUSY, POD_IDLE)
    with HeldLoad(services[POD_BUSY].api_url) as load:
        view = wait_for_view(
            prometheus,
            contract.REQUESTS_IN_FLIGHT,
            pods,
            lambda v: v.get(POD_BUSY, 0.0) >= 1.0 and POD_IDLE in v,
        )
        assert not load.errors, load.errors
        # Each client holds at most one request; the idle pod has none, and reports it (0, not
        # absent).
        assert 1.0 <= view[POD_BUSY] <= LOAD_CLIENTS, view
        assert view[POD_IDLE] == 0.0, view

        queue = hpa_view(prometheus, contract.QUEUE_ITEMS, pods)
        assert set(queue) == set(pods), queue
        assert 0.0 <= queue[POD_BUSY] <= LOAD_CLIENTS * INPUTS_PER_REQUEST, queue
        assert queue[POD_IDLE] == 0.0, queue

        # A one-pod request takes the adapter's equality branch (pod="..."), not the regex.
        single = hpa_view(prometheus, contract.REQUESTS_IN_FLIGHT, [POD_IDLE])
        assert single == {POD_IDLE: 0.0}
    assert load.completed > 0
    assert not load.errors, load.errors
    # Once the load stops the signal falls back, which is what lets the HPA scale down.
    wait_for_view(prometheus, contract.REQUESTS_IN_FLIGHT, pods, lambda v: v.get(POD_BUSY) == 0.0)


def test_gpu_utilisation_is_attributed_to_the_workload_pods(prometheus: str) -> None:
    wait_for_targets(prometheus)
    view = wait_for_view(
        prometheus,
        adapter_rules.GPU_UTILIZATION_METRIC,
        (POD_BUSY, POD_IDLE),
        lambda v: len(v) == 2,
    )
    assert view == GPU_UTIL


def test_dcgm_series_keep_workload_labels_and_no_exported_copies(prometheus: str) -> None:
    wait_for_targets(prometheus)
    series = instant_query(prometheus, f'DCGM_FI_DEV_GPU_UTIL{{job="{scrape.DCGM_JOB}"}}')
    by_gpu = {sample["metric"]["gpu"]: sample["metric"] for sample in series}
    assert set(by_gpu) == {"0", "1", "2"}
    for labels in by_gpu.values():
        assert labels["exporter_pod"] == DCGM_POD
        assert labels["exporter_namespace"] == DCGM_NAMESPACE
        assert labels["node"] == GPU_NODE
        assert not any(name.startswith("exported_") for name in labels), labels
    assert (by_gpu["0"]["pod"], by_gpu["0"]["namespace"]) == (POD_BUSY, NAMESPACE)
    assert (by_gpu["1"]["pod"], by_gpu["1"]["namespace"]) == (POD_IDLE, NAMESPACE)
    # The GPU with no workload is not attributed to the exporter (or anyone).
    assert "pod" not in by_gpu["2"], by_gpu["2"]
    assert "namespace" not in by_gpu["2"], by_gpu["2"]


def test_the_naive_configuration_would_hide_the_workload_pod(prometheus: str) -> None:
    """Proof that the collision is real: target labels pod/namespace push the workload's into
    exported_*."""
    wait_for_targets(prometheus)
    series = instant_query(prometheus, f'DCGM_FI_DEV_GPU_UTIL{{job="{NAIVE_DCGM_JOB}",gpu="0"}}')
    assert len(series) == 1
    labels = series[0]["metric"]
    assert labels["pod"] == DCGM_POD
    assert labels["exported_pod"] == POD_BUSY
    assert labels["exported_namespace"] == NAMESPACE
    # ...and the adapter rule's job matcher keeps such a duplicate scrape out of the HPA's view.
    rule = adapter_rules.rule_for(adapter_rules.GPU_UTILIZATION_METRIC).to_adapter_rule()
    assert f'job="{scrape.DCGM_JOB}"' in rule["metricsQuery"]
