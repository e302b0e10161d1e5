"""The inference workload under the mock engine, from each stack's real config."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pytest

from infra import adapter_rules, config, gpu_spec, inference, loadbalancer, monitoring
from rehearsal.mockengine import Inventory, Secret, load_stack_config, run_function, run_stack
from service import contract

IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/embeddings@sha256:" + "ab" * 32
PUBLIC = {
    "internetFacing": True,
    "clientCidrs": ["203.0.113.0/24"],
    "apiKeys": {"secure": "encrypted"},
}
CERTIFICATES = {
    "dev": "arn:aws:acm:us-west-2:111122223333:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
    "prod": "arn:aws:acm:us-east-1:111122223333:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
}
"""An ACM certificate in each stack's region."""
ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-"
TLS_ANNOTATIONS = {f"{ANNOTATION}{a}" for a in ("ssl-cert", "ssl-ports", "ssl-negotiation-policy")}


def stack(name: str, overrides: Mapping[str, Any] | None = None) -> config.StackConfig:
    return load_stack_config(name, overrides)


def tls(name: str) -> dict[str, Any]:
    return {"tlsCertificateArn": CERTIFICATES[name]}


@functools.cache
def build(name: str, public: bool = False, with_tls: bool = False) -> Inventory:
    cfg = stack(name, tls(name) if with_tls else PUBLIC if public else None)

    def program() -> None:
        inference.Inference("inf", inference_args(cfg))

    return run_function(program)


def inference_args(cfg: config.StackConfig) -> inference.InferenceArgs:
    return inference.InferenceArgs(
        inference=cfg.inference,
        model=cfg.model,
        image=IMAGE,
        prometheus_namespace="monitoring",
        prometheus_pod_labels=monitoring.prometheus_server_pod_labels(),
    )


def kind(inventory: Inventory, type_: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = inventory.one(type_, name).inputs
    return found


def deployment(inventory: Inventory) -> dict[str, Any]:
    return kind(inventory, "kubernetes:apps/v1:Deployment", "inf-deployment")


def pod(inventory: Inventory) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(inventory)["spec"]["template"]["spec"]
    return spec


def server(inventory: Inventory) -> dict[str, Any]:
    (container,) = pod(inventory)["containers"]
    found: dict[str, Any] = container
    return found


def env(inventory: Inventory) -> dict[str, str]:
    return {item["name"]: item["value"] for item in server(inventory)["env"]}


STACKS = ["dev", "prod"]


@pytest.mark.parametrize("name", STACKS)
def test_one_gpu_per_pod_on_gpu_nodes(name: str) -> None:
    inv = build(name)
    resources = server(inv)["resources"]
    assert resources["limits"][gpu_spec.GPU_RESOURCE] == "1"
    assert resources["requests"][gpu_spec.GPU_RESOURCE] == "1"
    cfg = stack(name).inference
    assert resources["requests"]["cpu"] == cfg.cpu_request
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == cfg.memory_request
    assert "cpu" not in resources["limits"]
    assert pod(inv)["tolerations"] == [gpu_spec.toleration()]
    assert pod(inv)["affinity"] == {"nodeAffinity": gpu_spec.node_affinity()}


@pytest.mark.parametrize("name", STACKS)
def test_spread_across_zones_and_nodes(name: str) -> None:
    spread = pod(build(name))["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in spread:
        assert constraint["labelSelector"] == {"matchLabels": inference.SELECTOR}
        assert constraint["maxSkew"] == 1


@pytest.mark.parametrize("name", STACKS)
def test_probes_use_the_contract_paths_on_the_metrics_listener(name: str) -> None:
    """The probes go to the metrics listener, which the server opens on EMBED_METRICS_PORT: on
    the API port, slow bodies or queued requests holding every connection got them 503
    too_many_connections, and the liveness probe restarted a working pod
    (tests/service/test_http_limits.py shows the server's side)."""
    inventory = build(name)
    container = server(inventory)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        contract.PORT_NAME: contract.SERVICE_PORT,
        contract.METRICS_PORT_NAME: contract.METRICS_PORT,
    }
    assert env(inventory)[contract.ENV_METRICS_PORT] == str(contract.METRICS_PORT)
    for probe, path in (
        ("startupProbe", contract.READY_PATH),
        ("readinessProbe", contract.READY_PATH),
        ("livenessProbe", contract.HEALTH_PATH),
    ):
        expected = {"path": path, "port": contract.METRICS_PORT_NAME}
        assert container[probe]["httpGet"] == expected, probe
    startup = container["startupProbe"]
    # A model load may take minutes before liveness takes over.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert container["command"] == list(contract.COMMAND)


def test_drain_fits_inside_a_spot_interruption_notice() -> None:
    inv = build("dev")
    grace = pod(inv)["terminationGracePeriodSeconds"]
    pre_stop = server(inv)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= contract.DRAIN_DELAY_SECONDS
    assert grace >= pre_stop + contract.DRAIN_TIMEOUT_SECONDS
    assert grace <= inference.SPOT_NOTICE_SECONDS - inference.NODE_DRAIN_ALLOWANCE_SECONDS
    values = env(inv)
    assert values[contract.ENV_DRAIN_DELAY_SECONDS] == "0"
    assert float(values[contract.ENV_DRAIN_TIMEOUT_SECONDS]) == contract.DRAIN_TIMEOUT_SECONDS
    # The NLB lets a deregistering pod's connections finish within the same drain, then closes them.
    annotations = kind(inv, "kubernetes:core/v1:Service", "inf-nlb")["metadata"]["annotations"]
    attributes = annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    assert "deregistration_delay.timeout_seconds=70" in attributes


def test_the_server_closes_idle_connections_before_the_nlb_forgets_them() -> None:
    inv = build("prod")
    keep_alive = int(env(inv)[contract.ENV_KEEP_ALIVE_TIMEOUT_SECONDS])
    assert keep_alive < inference.NLB_MIN_IDLE_TIMEOUT_SECONDS
    annotations = kind(inv, "kubernetes:core/v1:Service", "inf-nlb")["metadata"]["annotations"]
    # No listener attribute lowers the NLB's idle timeout below the server's keep-alive.
    assert not [value for value in annotations.values() if "idle_timeout" in value]


def test_a_keep_alive_past_the_nlb_idle_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(contract, "KEEP_ALIVE_TIMEOUT_SECONDS", 350)
    with pytest.raises(ValueError, match="NLB idle timeout"):
        inference.keep_alive_seconds()


def test_too_long_a_drain_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "DRAIN_TIMEOUT_SECONDS", 110.0)
    with pytest.raises(ValueError, match="spot interruption"):
        inference.termination_grace_seconds()


@pytest.mark.parametrize("name", STACKS)
def test_settings_reach_the_server_through_contract_env_names(name: str) -> None:
    cfg = stack(name)
    values = env(build(name))
    assert values[contract.ENV_MODEL] == cfg.model.id
    assert values[contract.ENV_SERVED_MODEL_NAME] == cfg.model.id
    assert values[contract.ENV_DTYPE] == cfg.model.dtype
    # Unit vectors by default, whatever the checkpoint's modules.json says.
    assert values[contract.ENV_NORMALIZE] == "true"
    assert values[contract.ENV_MAX_BATCH_TOKENS] == str(cfg.inference.max_batch_tokens)
    assert values[contract.ENV_MAX_BATCH_SIZE] == str(cfg.inference.max_batch_size)
    assert values[contract.ENV_MAX_QUEUE_ITEMS] == str(cfg.inference.max_queue_items)
    assert float(values[contract.ENV_MAX_QUEUE_SECONDS]) * 1000 == cfg.inference.max_queue_ms
    assert values[contract.ENV_METRICS_PORT] == str(contract.METRICS_PORT)
    assert all(
        key.startswith(contract.ENV_PREFIX) or key in {"HOME", "TMPDIR"} for key in values
    ), values
    assert contract.ENV_API_KEYS_FILE not in values  # no keys configured in the stack files


def test_normalize_model_leaves_the_choice_to_the_model() -> None:
    cfg = stack("dev", {"normalize": "model"})
    assert cfg.model.normalize == "model"
    names = {item["name"] for item in inference.container_env(inference_args(cfg))}
    assert contract.ENV_NORMALIZE not in names


@pytest.mark.parametrize("name", STACKS)
def test_pod_is_hardened(name: str) -> None:
    inv = build(name)
    security = server(inv)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec = pod(inv)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    scratch = {m["name"]: m["mountPath"] for m in server(inv)["volumeMounts"]}["scratch"]
    assert scratch == inference.SCRATCH_DIR
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}} in spec["volumes"]
    labels = kind(inv, "kubernetes:core/v1:Namespace", "inf-namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels[next(iter(loadbalancer.READINESS_GATE_LABEL))] == "enabled"


@pytest.mark.parametrize("name", STACKS)
def test_hpa_scales_on_in_flight_and_gpu_utilisation(name: str) -> None:
    cfg = stack(name).inference
    spec = kind(build(name), "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "inf-hpa")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": inference.APP_NAME,
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (
        cfg.hpa_min_replicas,
        cfg.hpa_max_replicas,
    )
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in spec["metrics"]}
    assert targets == {
        contract.REQUESTS_IN_FLIGHT: {
            "type": "AverageValue",
            "averageValue": str(cfg.hpa_target_in_flight),
        },
        adapter_rules.GPU_UTILIZATION_METRIC: {
            "type": "AverageValue",
            "averageValue": str(cfg.hpa_target_gpu_utilization),
        },
    }
    behavior = spec["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


@pytest.mark.parametrize("name", STACKS)
def test_deployment_leaves_replicas_to_the_hpa(name: str) -> None:
    spec = deployment(build(name))["spec"]
    assert "replicas" not in spec
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_nlb_is_internal_by_default_and_limited_to_client_cidrs() -> None:
    cfg = stack("prod").inference
    nlb = kind(build("prod"), "kubernetes:core/v1:Service", "inf-nlb")
    annotations = nlb["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert (
        annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"]
        == contract.READY_PATH
    )
    assert nlb["spec"]["type"] == "LoadBalancer"
    assert nlb["spec"]["loadBalancerClass"] == loadbalancer.LOAD_BALANCER_CLASS
    assert nlb["spec"]["loadBalancerSourceRanges"] == list(cfg.client_cidrs)


def test_internet_facing_only_when_configured_and_then_with_api_keys() -> None:
    inv = build("dev", public=True)
    nlb = kind(inv, "kubernetes:core/v1:Service", "inf-nlb")
    scheme = nlb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"]
    assert scheme == "internet-facing"
    assert nlb["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    secret = kind(inv, "kubernetes:core/v1:Secret", "inf-api-keys")
    data = secret["stringData"]
    assert isinstance(data, Secret), "API keys must stay a Pulumi secret"
    assert data.value == {inference.API_KEYS_FILE_KEY: "mock-secret-value-0000\n"}
    values = env(inv)
    assert values[contract.ENV_API_KEYS_FILE] == f"{inference.API_KEYS_DIR}/keys"
    volume = next(v for v in pod(inv)["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    annotations = deployment(inv)["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["gpu-inference.io/api-keys-sha256"]) == 64


def test_internet_facing_without_api_keys_is_a_config_error() -> None:
    with pytest.raises(config.ConfigError, match="apiKeys"):
        stack("dev", {"internetFacing": True, "clientCidrs": ["203.0.113.0/24"]})


@pytest.mark.parametrize("name", STACKS)
def test_selectors_match_the_pods(name: str) -> None:
    inv = build(name)
    pod_labels = deployment(inv)["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "deployment": deployment(inv)["spec"]["selector"]["matchLabels"],
        "service": kind(inv, "kubernetes:core/v1:Service", "inf-service")["spec"]["selector"],
        "nlb": kind(inv, "kubernetes:core/v1:Service", "inf-nlb")["spec"]["selector"],
        "pdb": kind(inv, "kubernetes:policy/v1:PodDisruptionBudget", "inf-pdb")["spec"]["selector"][
            "matchLabels"
        ],
        "policy": kind(inv, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "inf-network-policy")[
            "spec"
        ]["podSelector"]["matchLabels"],
    }
    for what, selector in selectors.items():
        assert selector, what
        assert selector.items() <= pod_labels.items(), what


def test_pdb_never_blocks_a_drain() -> None:
    spec = kind(build("dev"), "kubernetes:policy/v1:PodDisruptionBudget", "inf-pdb")["spec"]
    assert spec["maxUnavailable"] == 1
    assert "minAvailable" not in spec
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_network_policy_admits_only_prometheus_to_the_metrics_port() -> None:
    spec = kind(
        build("dev"), "kubernetes:networking.k8s.io/v1:NetworkPolicy", "inf-network-policy"
    )["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
    assert set(by_port) == {contract.PORT_NAME, contract.METRICS_PORT_NAME}
    metrics_from = by_port[contract.METRICS_PORT_NAME]["from"]
    assert metrics_from == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": monitoring.prometheus_server_pod_labels()},
        }
    ]
    assert "from" not in by_port[contract.PORT_NAME]


def test_every_object_is_in_the_configured_namespace() -> None:
    inv = build("prod")
    namespace = stack("prod").inference.namespace
    for resource in inv.k8s_resources():
        if resource.inputs["kind"] not in ("Namespace", "PriorityClass"):  # cluster-scoped
            assert resource.inputs["metadata"]["namespace"] == namespace, resource.name


def test_no_api_key_secret_without_keys() -> None:
    inv = build("prod")
    assert inv.of_type("kubernetes:core/v1:Secret") == []
    volumes = {v["name"] for v in pod(inv)["volumes"]}
    assert volumes == {"scratch"}


# --- TLS at the NLB -------------------------------------------------------------------------------


def nlb(inventory: Inventory) -> dict[str, Any]:
    return kind(inventory, "kubernetes:core/v1:Service", "inf-nlb")


@pytest.mark.parametrize("name", STACKS)
def test_nlb_without_a_certificate_is_plain_http_on_the_service_port(name: str) -> None:
    for inv in (build(name), build("dev", public=True)):
        service = nlb(inv)
        assert not TLS_ANNOTATIONS & service["metadata"]["annotations"].keys()
        assert service["spec"]["ports"] == [
            {
                "name": contract.PORT_NAME,
                "port": inference.SERVICE_PORT,
                "targetPort": contract.PORT_NAME,
                "protocol": "TCP",
            }
        ]


@pytest.mark.parametrize("name", STACKS)
def test_nlb_with_a_certificate_terminates_tls_on_443_only(name: str) -> None:
    service = nlb(build(name, with_tls=True))
    annotations = service["metadata"]["annotations"]
    assert annotations[f"{ANNOTATION}ssl-cert"] == CERTIFICATES[name]
    assert (
        annotations[f"{ANNOTATION}ssl-negotiation-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    )
    # The NLB decrypts and forwards plain TCP: no TLS between the NLB and the pods.
    assert f"{ANNOTATION}backend-protocol" not in annotations
    (port,) = service["spec"]["ports"]
    assert port == {
        "name": "https",
        "port": 443,
        "targetPort": contract.PORT_NAME,
        "protocol": "TCP",
    }
    # Every listener is a TLS listener: no clear-text port where API keys could be sent.
    assert annotations[f"{ANNOTATION}ssl-ports"].split(",") == [str(port["port"])]
    # Health checks still go to the pod's plain HTTP readiness path.
    assert annotations[f"{ANNOTATION}healthcheck-port"] == "traffic-port"
    assert annotations[f"{ANNOTATION}healthcheck-protocol"] == "http"


@pytest.mark.parametrize("name", STACKS)
def test_tls_changes_only_the_nlb_not_the_pods_or_their_network_policy(name: str) -> None:
    """IP targets: the NLB connects to the pod's contract port whatever its listener port, so the
    pod-side objects must be identical with and without TLS."""
    plain, secure = build(name), build(name, with_tls=True)
    for type_, resource in (
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "inf-network-policy"),
        ("kubernetes:apps/v1:Deployment", "inf-deployment"),
        ("kubernetes:core/v1:Service", "inf-service"),
    ):
        assert kind(plain, type_, resource) == kind(secure, type_, resource), resource
    (port,) = nlb(secure)["spec"]["ports"]
    container_ports = {p["name"] for p in server(secure)["ports"]}
    assert port["targetPort"] in container_ports
    policy = kind(secure, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "inf-network-policy")
    admitted = {
        rule["ports"][0]["port"] for rule in policy["spec"]["ingress"] if "from" not in rule
    }
    assert admitted == {port["targetPort"]}


def test_endpoint_outputs_are_https_with_a_certificate() -> None:
    inv = run_stack("prod", {**PUBLIC, **tls("prod"), "endpointHostname": "embed.example.com"})
    url = inv.outputs["endpointUrl"]
    assert url == "https://embed.example.com", "the name on the certificate, not the NLB's"
    assert inv.outputs["loadBalancerHostname"].endswith(".elb.us-east-1.amazonaws.com")
    assert ":" not in url.removeprefix("https://"), "443 is https' default port: no port in the URL"
    assert inv.outputs["openaiBaseUrl"] == f"{url}{contract.OPENAI_BASE_PATH}"
    (service,) = [
        s for s in inv.of_type("kubernetes:core/v1:Service") if s.name.endswith("inference-nlb")
    ]
    annotations = service.inputs["metadata"]["annotations"]
    assert annotations[f"{ANNOTATION}scheme"] == "internet-facing"
    assert annotations[f"{ANNOTATION}ssl-cert"] == CERTIFICATES["prod"]


def test_endpoint_outputs_stay_http_without_a_certificate(dev: Inventory) -> None:
    url = dev.outputs["endpointUrl"]
    assert url.startswith("http://"), url
    assert url.endswith(".elb.us-west-2.amazonaws.com"), url
    assert dev.outputs["openaiBaseUrl"] == f"{url}{contract.OPENAI_BASE_PATH}"


def test_inference_endpoint_url_is_none_until_the_nlb_has_a_hostname() -> None:
    cfg = stack("dev", tls("dev")).inference
    assert inference.endpoint_url(None, cfg) is None
    assert inference.endpoint_url("nlb.example", cfg) == "https://nlb.example"
    assert inference.endpoint_url("nlb.example", stack("dev").inference) == "http://nlb.example"
