"""Warm GPU headroom: placeholder pods that keep GPU nodes up, with the image pulled, ahead of load.

cluster-autoscaler's FAQ ("How can I configure overprovisioning with Cluster Autoscaler?",
kubernetes/autoscaler cluster-autoscaler/FAQ.md at cluster-autoscaler-1.34.1 and 1.35.0): pods of a
Deployment at a very low priority reserve capacity; when real pods need it the scheduler preempts
them, the real pods take their place, and the evicted placeholders, now pending, make the
autoscaler add the next nodes. "Priority -10 will be reserved for overprovisioning pods as it is the
lowest priority that triggers scaling clusters": the flag `expendable-pods-priority-cutoff` defaults
to -10 (config/flags/flags.go) and a pod is expendable, never scaled up for, only when its priority
is *below* the cutoff (`IsExpendablePod`, core/utils/expendable.go: `priority < cutoff`).

Each placeholder is one inference pod's worth of capacity: the same GPU, CPU and memory requests,
tolerations, node affinity and spread, so the autoscaler picks the node group and shape the next
replica needs, and the replica fits exactly where a placeholder was. It runs the inference image
itself (same digest), so the spare node has pulled the multi-GB image before a replica needs it; its
command only waits for SIGTERM and exits at once, so preemption frees the GPU immediately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from infra import inference
from infra.config import InferenceConfig
from infra.namespaces import pod_security_namespace

NAMESPACE: Final = "gpu-headroom"
"""Its own namespace: `kubectl -n <inference namespace> get pods` and the inference alerts (pods
pending with no free GPU, infra/alerts.py) see the service's pods only."""
APP_NAME: Final = "embeddings-headroom"
SELECTOR: Final = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": "placeholder"}
LABELS: Final = {**SELECTOR, "app.kubernetes.io/part-of": "gpu-inference"}

PRIORITY_CLASS: Final = "gpu-inference-headroom"
PRIORITY: Final = -10
"""The FAQ's overprovisioning priority: below every real workload (the serving pods' 0,
inference.SERVING_PRIORITY), and not below the autoscaler's expendable cutoff, so a pending
placeholder still makes it add a node."""
DEFAULT_EXPENDABLE_CUTOFF: Final = -10
"""cluster-autoscaler's `--expendable-pods-priority-cutoff` default, as read at EXPENDABLE_READ_AT
(config/flags/flags.go: `flag.Int("expendable-pods-priority-cutoff", -10, ...)`; core/utils/
expendable.go `IsExpendablePod`: `priority < cutoff`); the program does not set the flag
(tests/infra/test_headroom.py reads the rendered autoscaler's arguments, and fails when the pinned
autoscaler moves past the release read here)."""
EXPENDABLE_READ_AT: Final = "1.35.0"
"""The cluster-autoscaler release whose source the cutoff and its comparison were read at."""
GRACE_SECONDS: Final = 0
"""As the FAQ's placeholder: nothing to drain, the replica waiting for the GPU starts sooner."""

WAIT_COMMAND: Final = (
    "python",
    "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()",
)
"""Waits and exits on SIGTERM (as PID 1, a process without a handler would ignore it)."""


@dataclass(frozen=True)
class HeadroomArgs:
    replicas: int
    """gpuHeadroom: placeholders, each holding one inference pod's capacity."""
    inference: InferenceConfig
    image: pulumi.Input[str]
    """The inference image, by digest: what the spare node should have pulled."""
    scheduled: bool
    """servingHours is set: the schedule scales the placeholders (to zero at night), not Pulumi."""


def placeholder_pod_spec(inference_config: InferenceConfig, image: Any) -> dict[str, Any]:
    """The inference pod's scheduling inputs with a container that only waits."""
    requests = inference.resources(inference_config)["requests"]
    return {
        "serviceAccountName": APP_NAME,
        "automountServiceAccountToken": False,
        "priorityClassName": PRIORITY_CLASS,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        **inference.gpu_placement(),
        "topologySpreadConstraints": inference.spread(SELECTOR),
        "securityContext": dict(inference.POD_SECURITY_CONTEXT),
        "containers": [
            {
                "name": "placeholder",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(WAIT_COMMAND),
                # Guaranteed QoS: the limits equal the requests, CPU included (it never runs).
                "resources": {"requests": dict(requests), "limits": dict(requests)},
                "securityContext": dict(inference.CONTAINER_SECURITY_CONTEXT),
            }
        ],
    }


class GpuHeadroom(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment

    def __init__(
        self, name: str, args: HeadroomArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:headroom:GpuHeadroom", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = pod_security_namespace(
            f"{name}-namespace", NAMESPACE, "restricted", opts=child
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        def meta(object_name: str = APP_NAME) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=NAMESPACE, labels=dict(LABELS)
            )

        self.priority_class = k8s.scheduling.v1.PriorityClass(
            f"{name}-priority-class",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=PRIORITY_CLASS, labels=dict(LABELS)),
            value=PRIORITY,
            # Placeholders take free capacity only; they never evict anything to get it.
            preemption_policy="Never",
            global_default=False,
            description="gpu-inference warm-GPU placeholders: preempted by any real workload.",
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=meta(),
            automount_service_account_token=False,
            opts=in_ns,
        )
        # It talks to nothing and nothing talks to it.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=meta(),
            spec={
                "podSelector": {"matchLabels": dict(SELECTOR)},
                "policyTypes": ["Ingress", "Egress"],
            },
            opts=in_ns,
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=APP_NAME,
                namespace=NAMESPACE,
                labels=dict(LABELS),
                # A placeholder may wait for spot capacity; `pulumi up` must not.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec={
                # With servingHours, zero at creation: the schedule's converge Job sets the count
                # of the current window (infra/schedule.py).
                "replicas": 0 if args.scheduled else args.replicas,
                "selector": {"matchLabels": dict(SELECTOR)},
                # Replace in place: a surge placeholder would ask for one more GPU node.
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                },
                "template": {
                    "metadata": {"labels": dict(LABELS)},
                    "spec": placeholder_pod_spec(args.inference, args.image),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.namespace, account, self.priority_class],
                # With servingHours the schedule owns the count (zero at night). Under server-side
                # apply, pulumi-kubernetes drops an ignored field from its apply once another field
                # manager owns it, and otherwise re-sends the live value (provider/pkg/await/
                # await.go handleSSAIgnoreFields, v4.32.0 and main of 2026-07), so `pulumi up`
                # neither resets it nor conflicts with the scaler.
                ignore_changes=["spec.replicas"] if args.scheduled else None,
            ),
        )
        self.register_outputs({"replicas": args.replicas, "namespace": NAMESPACE})
