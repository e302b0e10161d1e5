"""The inference workload: namespace, API keys, Deployment, Services, HPA, PDB, NetworkPolicy.

Everything the pods need to agree with the server comes from service/contract.py (ports, paths, env
names, drain timings) and everything they need to agree with the GPU nodes from infra/gpu_spec.py.
The HPA scales on per-pod custom metrics that prometheus-adapter serves (infra/adapter_rules.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from infra import adapter_rules, gpu_spec
from infra.config import InferenceConfig, ModelConfig
from infra.loadbalancer import LOAD_BALANCER_CLASS, READINESS_GATE_LABEL
from infra.namespaces import pod_security_namespace
from service import contract

APP_NAME: Final = "embeddings"
"""Name of the Deployment, Services, HPA and PDB, and the pods' `app.kubernetes.io/name`."""
CONTAINER: Final = "server"
SELECTOR: Final = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": CONTAINER}
LABELS: Final = {**SELECTOR, "app.kubernetes.io/part-of": "gpu-inference"}

SERVICE_PORT: Final = 80
"""Port of the ClusterIP Service, and of the NLB without TLS (both forward to the contract port)."""
TLS_PORT: Final = 443
"""The NLB's only listener when `tlsCertificateArn` is set: no clear-text port next to it."""
TLS_PORT_NAME: Final = "https"
TLS_NEGOTIATION_POLICY: Final = "ELBSecurityPolicy-TLS13-1-2-2021-06"
"""TLS 1.3 and 1.2 only, the policy of the controller docs' example (its own default,
ELBSecurityPolicy-2016-08, still admits TLS 1.0 and 1.1)."""
API_KEYS_DIR: Final = "/etc/embed/api-keys"
API_KEYS_FILE_KEY: Final = "keys"
SCRATCH_DIR: Final = "/tmp"

SPOT_NOTICE_SECONDS: Final = 120
"""EC2 gives a spot instance two minutes between the interruption notice and reclaiming it."""
NODE_DRAIN_ALLOWANCE_SECONDS: Final = 20
"""Of the notice, the time before the kubelet gets to our pod (delivery, cordon, eviction)."""
SHUTDOWN_MARGIN_SECONDS: Final = 5
"""After the drain timeout, time for the process to exit before SIGKILL."""
STARTUP_BUDGET_SECONDS: Final = 600
"""How long a new pod may take to load and warm up the model before the kubelet restarts it (image
pull is not counted: probes start with the container)."""
STARTUP_PERIOD_SECONDS: Final = 2
"""How soon after the model is warm the kubelet notices (a step of the scale-up budget, README
"Scale-up time budget"): each probe is one GET of /ready, which answers 503 from the front layer
while the model loads, so probing every 2 s instead of 10 s costs nothing and saves up to 8 s."""

NLB_HEALTH_CHECK_INTERVAL_SECONDS: Final = 5

SERVING_PRIORITY_CLASS: Final = "gpu-inference-serving"
"""The inference pods' PriorityClass. Its value is the default 0, so they preempt nothing but the
warm-GPU placeholders (infra/headroom.py, -10) on GPU nodes, where every other pod is
system-node-critical; being explicit keeps that true whatever globalDefault a cluster adds."""
SERVING_PRIORITY: Final = 0

POD_SECURITY_CONTEXT: Final = {
    # The image's `app` user (Dockerfile: useradd --uid 10001).
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


NLB_MIN_IDLE_TIMEOUT_SECONDS: Final = 60
"""The least a Network Load Balancer's TCP idle timeout can be set to (the default is 350 s, and a
TLS listener's is 350 s, fixed): AWS, "Update the TCP idle timeout for your Network Load Balancer
listener"."""


def keep_alive_seconds() -> int:
    """The server's idle keep-alive timeout, under any idle timeout the NLB can have: the NLB
    forgets an idle flow without telling either end, and the client's next request on it meets a
    reset; a server that closes first sends a FIN every client pool notices."""
    seconds = contract.KEEP_ALIVE_TIMEOUT_SECONDS
    if seconds >= NLB_MIN_IDLE_TIMEOUT_SECONDS:
        raise ValueError(
            f"contract keep-alive timeout {seconds}s is not under the NLB idle timeout, which can "
            f"be as short as {NLB_MIN_IDLE_TIMEOUT_SECONDS}s; shorten it in service/contract.py"
        )
    return seconds


def termination_grace_seconds() -> int:
    """Long enough for the preStop delay plus the server's drain, short enough for a spot notice."""
    grace = math.ceil(
        contract.DRAIN_DELAY_SECONDS + contract.DRAIN_TIMEOUT_SECONDS + SHUTDOWN_MARGIN_SECONDS
    )
    budget = SPOT_NOTICE_SECONDS - NODE_DRAIN_ALLOWANCE_SECONDS
    if grace > budget:
        raise ValueError(
            f"contract drain delay + timeout + {SHUTDOWN_MARGIN_SECONDS}s = {grace}s exceeds the "
            f"{budget}s a spot interruption leaves a pod; shorten the drain in service/contract.py"
        )
    return grace


@dataclass(frozen=True)
class InferenceArgs:
    inference: InferenceConfig
    model: ModelConfig
    image: pulumi.Input[str]
    """Pinned by digest (infra/image.py)."""
    prometheus_namespace: str
    prometheus_pod_labels: Mapping[str, str]
    """The only pods admitted to the metrics port."""
    depends_on: tuple[pulumi.Resource, ...] = ()
    """The load balancer controller (its webhook injects readiness gates; it owns the NLB), the GPU
    stack, and whatever the controller needs to delete the NLB when the Service is destroyed."""
    scheduled: bool = False
    """servingHours is set: created at zero replicas, woken by the schedule (infra/schedule.py)."""


def container_env(args: InferenceArgs) -> list[dict[str, Any]]:
    inference, model = args.inference, args.model
    env = {
        contract.ENV_MODEL: model.id,
        contract.ENV_SERVED_MODEL_NAME: model.id,
        contract.ENV_DTYPE: model.dtype,
        contract.ENV_MAX_BATCH_TOKENS: str(inference.max_batch_tokens),
        contract.ENV_MAX_BATCH_SIZE: str(inference.max_batch_size),
        contract.ENV_MAX_QUEUE_ITEMS: str(inference.max_queue_items),
        contract.ENV_MAX_QUEUE_SECONDS: f"{inference.max_queue_ms / 1000:g}",
        contract.ENV_METRICS_PORT: str(contract.METRICS_PORT),
        # The preStop hook already kept the pod serving for the drain delay while endpoints and the
        # NLB stopped routing here; repeating it after SIGTERM would only eat into the spot notice.
        contract.ENV_DRAIN_DELAY_SECONDS: "0",
        contract.ENV_DRAIN_TIMEOUT_SECONDS: f"{contract.DRAIN_TIMEOUT_SECONDS:g}",
        contract.ENV_KEEP_ALIVE_TIMEOUT_SECONDS: str(keep_alive_seconds()),
        # Read-only root filesystem: anything a library caches goes to the scratch emptyDir.
        "HOME": SCRATCH_DIR,
        "TMPDIR": SCRATCH_DIR,
    }
    if model.revision is not None:
        env[contract.ENV_MODEL_REVISION] = model.revision
    if model.normalize != "model":  # unset: the server follows the model's modules.json
        env[contract.ENV_NORMALIZE] = model.normalize
    if inference.api_keys:
        env[contract.ENV_API_KEYS_FILE] = f"{API_KEYS_DIR}/{API_KEYS_FILE_KEY}"
    return [{"name": key, "value": value} for key, value in sorted(env.items())]


def _http_probe(path: str, period: int, failures: int, timeout: int) -> dict[str, Any]:
    # On the metrics listener, not the API port: however many API connections slow bodies or
    # queued requests hold (EMBED_MAX_CONNECTIONS), the kubelet gets a connection there
    # (service.httpserver.MetricsListener), so a busy pod is never restarted for it. The
    # NetworkPolicy admitting only Prometheus to that port does not refuse the kubelet: policies
    # cannot block a pod's own node (kubernetes.io, "Network Policies", "What you can't do with
    # network policies"), and the VPC CNI's policy agent allows all traffic from the node's IP
    # (aws/aws-network-policy-agent#65, "Ignore policy restrictions against Node IP").
    return {
        "httpGet": {"path": path, "port": contract.METRICS_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def resources(inference: InferenceConfig) -> dict[str, Any]:
    """The pod's GPUs and the configured CPU and memory (what the scheduler and autoscaler fit)."""
    gpu = {gpu_spec.GPU_RESOURCE: str(gpu_spec.GPUS_PER_POD)}
    memory = inference.memory_request
    return {
        # No CPU limit: throttling a tokenizer thread shows up as tail latency, not as savings.
        "requests": {"cpu": inference.cpu_request, "memory": memory, **gpu},
        "limits": {"memory": memory, **gpu},
    }


def gpu_placement() -> dict[str, Any]:
    """Where a pod holding one of the service's GPUs may run: the GPU nodes, taint tolerated."""
    return {
        "tolerations": [gpu_spec.toleration()],
        "affinity": {"nodeAffinity": gpu_spec.node_affinity()},
    }


def spread(selector: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            # ScheduleAnyway: a zone (or node) without spot capacity must not block scale-up;
            # the scheduler still prefers the spread.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
            # Spread each rollout's pods on their own, not counting the old ReplicaSet's.
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def container(args: InferenceArgs) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    if args.inference.api_keys:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return {
        "name": CONTAINER,
        "image": args.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(contract.COMMAND),
        "env": container_env(args),
        "ports": [
            {"name": contract.PORT_NAME, "containerPort": contract.SERVICE_PORT, "protocol": "TCP"},
            {
                "name": contract.METRICS_PORT_NAME,
                "containerPort": contract.METRICS_PORT,
                "protocol": "TCP",
            },
        ],
        "resources": resources(args.inference),
        # The model load can take minutes; until it succeeds liveness and readiness do not run.
        "startupProbe": _http_probe(
            contract.READY_PATH,
            STARTUP_PERIOD_SECONDS,
            STARTUP_BUDGET_SECONDS // STARTUP_PERIOD_SECONDS,
            5,
        ),
        "readinessProbe": _http_probe(contract.READY_PATH, 5, 2, 3),
        "livenessProbe": _http_probe(contract.HEALTH_PATH, 10, 3, 5),
        "lifecycle": {"preStop": {"sleep": {"seconds": math.ceil(contract.DRAIN_DELAY_SECONDS)}}},
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": mounts,
    }


def pod_spec(args: InferenceArgs) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}]
    if args.inference.api_keys:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {
                    "secretName": f"{APP_NAME}-api-keys",
                    "items": [{"key": API_KEYS_FILE_KEY, "path": API_KEYS_FILE_KEY}],
                    "defaultMode": 0o440,
                },
            }
        )
    return {
        "serviceAccountName": APP_NAME,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(),
        "priorityClassName": SERVING_PRIORITY_CLASS,
        **gpu_placement(),
        "topologySpreadConstraints": spread(SELECTOR),
        "securityContext": dict(POD_SECURITY_CONTEXT),
        "containers": [container(args)],
        "volumes": volumes,
    }


def nlb_annotations(inference: InferenceConfig) -> dict[str, str]:
    """AWS Load Balancer Controller annotations (docs: guide/service/annotations.md)."""
    prefix = "service.beta.kubernetes.io/aws-load-balancer"
    drain = math.ceil(contract.DRAIN_DELAY_SECONDS + contract.DRAIN_TIMEOUT_SECONDS)
    tls: dict[str, str] = {}
    if inference.tls_certificate_arn is not None:
        # The "TLS" section of kubernetes-sigs/aws-load-balancer-controller
        # docs/guide/service/annotations.md: ssl-cert takes ACM ARNs, ssl-ports the frontend ports
        # (names or numbers) that get TLS listeners, ssl-negotiation-policy the ELB security
        # policy. backend-protocol stays at its default, tcp: the NLB decrypts and forwards plain
        # TCP to the pod IP, so the server and its NetworkPolicy are the same with or without TLS.
        tls = {
            f"{prefix}-ssl-cert": inference.tls_certificate_arn,
            f"{prefix}-ssl-ports": str(TLS_PORT),
            f"{prefix}-ssl-negotiation-policy": TLS_NEGOTIATION_POLICY,
        }
    return {
        f"{prefix}-scheme": "internet-facing" if inference.internet_facing else "internal",
        # Pods are targets (no NodePort hop, no cross-node SNAT); readiness gates follow them.
        f"{prefix}-nlb-target-type": "ip",
        f"{prefix}-ip-address-type": "ipv4",
        f"{prefix}-healthcheck-protocol": "http",
        f"{prefix}-healthcheck-path": contract.READY_PATH,
        f"{prefix}-healthcheck-port": "traffic-port",
        # The shortest interval NLB target groups take (5-300 s: ELB API reference,
        # CreateTargetGroup HealthCheckIntervalSeconds): a new pod's readiness gate opens after
        # 2 x 5 s instead of 2 x 10 s (README "Scale-up time budget"). The timeout stays below the
        # interval; /ready answers from the front layer at once.
        f"{prefix}-healthcheck-interval": str(NLB_HEALTH_CHECK_INTERVAL_SECONDS),
        f"{prefix}-healthcheck-timeout": "4",
        f"{prefix}-healthcheck-healthy-threshold": "2",
        f"{prefix}-healthcheck-unhealthy-threshold": "2",
        # Connections to a deregistering pod may finish within its drain, then are closed.
        f"{prefix}-target-group-attributes": (
            f"deregistration_delay.timeout_seconds={drain},"
            "deregistration_delay.connection_termination.enabled=true"
        ),
        f"{prefix}-attributes": "load_balancing.cross_zone.enabled=true",
        **tls,
    }


def nlb_port(inference: InferenceConfig) -> dict[str, Any]:
    """The NLB Service's one port: 443 with TLS, else the plain service port; always to the pod's
    contract port (IP targets: the listener's port never reaches the pod)."""
    tls = inference.tls_certificate_arn is not None
    return {
        "name": TLS_PORT_NAME if tls else contract.PORT_NAME,
        "port": TLS_PORT if tls else SERVICE_PORT,
        "targetPort": contract.PORT_NAME,
        "protocol": "TCP",
    }


def endpoint_url(nlb_hostname: str | None, inference: InferenceConfig) -> str | None:
    """The URL clients use: `endpointHostname` when configured (the name on the certificate), else
    the NLB's own hostname once it exists. Each scheme's default port (443, 80) is the listener's,
    so no port."""
    hostname = inference.endpoint_hostname or nlb_hostname
    if not hostname:
        return None
    scheme = "https" if inference.tls_certificate_arn is not None else "http"
    return f"{scheme}://{hostname}"


def hpa_spec(inference: InferenceConfig) -> dict[str, Any]:
    def pods_metric(name: str, average: int) -> dict[str, Any]:
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": name},
                "target": {"type": "AverageValue", "averageValue": str(average)},
            },
        }

    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP_NAME},
        "minReplicas": inference.hpa_min_replicas,
        "maxReplicas": inference.hpa_max_replicas,
        "metrics": [
            # Primary: work accepted and not yet answered, per pod. Rises the moment load does.
            pods_metric(contract.REQUESTS_IN_FLIGHT, inference.hpa_target_in_flight),
            # Secondary: catches load made of few, large requests that in-flight counts miss.
            pods_metric(adapter_rules.GPU_UTILIZATION_METRIC, inference.hpa_target_gpu_utilization),
        ],
        "behavior": {
            # A new GPU pod can take minutes (node, image, model): ask for capacity at once.
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "selectPolicy": "Max",
                "policies": [
                    {"type": "Percent", "value": 100, "periodSeconds": 30},
                    {"type": "Pods", "value": 4, "periodSeconds": 30},
                ],
            },
            # Give capacity back slowly: a pod removed too early is minutes to get back.
            "scaleDown": {
                "stabilizationWindowSeconds": 300,
                "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
            },
        },
    }


def network_policy_spec(args: InferenceArgs) -> dict[str, Any]:
    return {
        "podSelector": {"matchLabels": dict(SELECTOR)},
        "policyTypes": ["Ingress"],
        "ingress": [
            # Clients (through the NLB, whose source ranges and security group do the admission,
            # or in-cluster) reach the API port; API keys guard the routes. The kubelet's probes
            # go to the metrics port, which no policy can close to the node (_http_probe).
            {"ports": [{"port": contract.PORT_NAME, "protocol": "TCP"}]},
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {
                                "kubernetes.io/metadata.name": args.prometheus_namespace
                            }
                        },
                        "podSelector": {"matchLabels": dict(args.prometheus_pod_labels)},
                    }
                ],
                "ports": [{"port": contract.METRICS_PORT_NAME, "protocol": "TCP"}],
            },
        ],
    }


def _hostname(status: Any) -> str | None:
    """The NLB's DNS name from the Service status (absent until the controller provisions it)."""
    balancer = getattr(status, "load_balancer", None)
    ingress = getattr(balancer, "ingress", None)
    if not ingress:
        return None
    hostname: str | None = ingress[0].hostname
    return hostname


class Inference(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    load_balancer: k8s.core.v1.Service
    hpa: k8s.autoscaling.v2.HorizontalPodAutoscaler
    load_balancer_hostname: pulumi.Output[str | None]
    """The NLB's AWS DNS name, once the controller has provisioned it (the target of the
    endpointHostname record)."""
    endpoint_url: pulumi.Output[str | None]
    """https:// with tlsCertificateArn, else http://, then endpointHostname when configured, else
    the NLB hostname."""

    def __init__(
        self, name: str, args: InferenceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:inference:Inference", name, None, opts)
        inference = args.inference
        ns = inference.namespace
        child = pulumi.ResourceOptions(parent=self)
        # Readiness gates (label): a rollout waits for new pods to be healthy *in the NLB* before
        # old ones go.
        self.namespace = pod_security_namespace(
            f"{name}-namespace", ns, "restricted", opts=child, extra_labels=READINESS_GATE_LABEL
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.priority_class = k8s.scheduling.v1.PriorityClass(
            f"{name}-priority-class",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVING_PRIORITY_CLASS, labels=dict(LABELS)),
            value=SERVING_PRIORITY,
            preemption_policy="PreemptLowerPriority",
            global_default=False,
            description="gpu-inference serving pods: preempt the warm-GPU placeholders.",
            opts=child,
        )

        def meta(object_name: str = APP_NAME) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=ns, labels=dict(LABELS))

        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=meta(),
            automount_service_account_token=False,
            opts=in_ns,
        )
        template_annotations: dict[str, pulumi.Input[str]] = {}
        secrets: list[pulumi.Resource] = []
        if inference.api_keys:
            keys_file = inference.api_keys.as_output().apply(lambda keys: "\n".join(keys) + "\n")
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-api-keys",
                    metadata=meta(f"{APP_NAME}-api-keys"),
                    type="Opaque",
                    string_data={API_KEYS_FILE_KEY: keys_file},
                    opts=in_ns,
                )
            )
            # The server reads the keys at start: a changed Secret must roll the pods. A SHA-256 of
            # high-entropy keys reveals nothing, so it may stay visible in the preview.
            template_annotations["gpu-inference.io/api-keys-sha256"] = pulumi.Output.unsecret(
                keys_file.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
            )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(),
            spec={
                # No `replicas` after creation: the HPA (and the schedule) own the count; a value
                # here would reset it on every update. With servingHours it is created at zero,
                # not at the API's default of one, so an `up` outside the windows starts no GPU
                # node; the schedule's converge Job wakes it inside them (infra/schedule.py).
                **({"replicas": 0} if args.scheduled else {}),
                "selector": {"matchLabels": dict(SELECTOR)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                # A new pod may wait for a spot GPU node, a multi-GB image pull and the model load.
                "progressDeadlineSeconds": 1800,
                "revisionHistoryLimit": 5,
                "template": {
                    "metadata": {
                        "labels": dict(LABELS),
                        **({"annotations": template_annotations} if template_annotations else {}),
                    },
                    "spec": pod_spec(args),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    self.namespace,
                    self.service_account,
                    self.priority_class,
                    *secrets,
                    *args.depends_on,
                ],
                # Pulumi waits for the rollout; a first pod may need a new spot GPU node, a
                # multi-GB image pull and a model load (the default wait is 10 minutes).
                custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m"),
                # As the placeholders' count (infra/headroom.py cites the provider's handling).
                ignore_changes=["spec.replicas"] if args.scheduled else None,
            ),
        )
        port = {
            "name": contract.PORT_NAME,
            "port": SERVICE_PORT,
            "targetPort": contract.PORT_NAME,
            "protocol": "TCP",
        }
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec={"type": "ClusterIP", "selector": dict(SELECTOR), "ports": [port]},
            opts=in_ns,
        )
        self.load_balancer = k8s.core.v1.Service(
            f"{name}-nlb",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{APP_NAME}-nlb",
                namespace=ns,
                labels=dict(LABELS),
                annotations=nlb_annotations(inference),
            ),
            spec={
                "type": "LoadBalancer",
                "loadBalancerClass": LOAD_BALANCER_CLASS,
                "loadBalancerSourceRanges": list(inference.client_cidrs),
                "selector": dict(SELECTOR),
                "ports": [nlb_port(inference)],
            },
            # The controller must outlive the Service on destroy, or the NLB is orphaned.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, *args.depends_on]),
        )
        self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa", metadata=meta(), spec=hpa_spec(inference), opts=in_ns
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(),
            spec={
                # maxUnavailable, not minAvailable: with one replica a node drain must still
                # proceed.
                "maxUnavailable": 1,
                "selector": {"matchLabels": dict(SELECTOR)},
                # A pod that is not ready serves nothing; never let it block a drain.
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
            opts=in_ns,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata=meta(), spec=network_policy_spec(args), opts=in_ns
        )
        self.load_balancer_hostname = self.load_balancer.status.apply(_hostname)
        self.endpoint_url = self.load_balancer_hostname.apply(
            lambda host: endpoint_url(host, inference)
        )
        self.namespace_name = ns
        self.hpa_name = APP_NAME
        self.register_outputs(
            {
                "endpointUrl": self.endpoint_url,
                "loadBalancerHostname": self.load_balancer_hostname,
                "namespace": ns,
                "hpaName": APP_NAME,
            }
        )
