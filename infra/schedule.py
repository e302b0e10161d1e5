"""Idle to zero on a schedule: CronJobs that scale the inference Deployment (and the warm-GPU
placeholders) to zero outside `servingHours` and back when a window opens, and a one-shot Job that
puts a newly created Deployment into the state of the current window.

With no pod asking for a GPU, cluster-autoscaler removes the GPU nodes after
`autoscalerScaleDownUnneededTime`. The HPA does nothing while its target is at zero (infra/scaler.py
cites the controller), so the schedule and the HPA never fight; nor does `pulumi up`: Pulumi sets
neither Deployment's count after creating it (infra/inference.py, infra/headroom.py: `replicas` 0
at creation, then `ignoreChanges`, which under server-side apply leaves the field to whoever set it
since).

Each edge of the merged windows (infra/config.py `awake_spans`) is one scale event; events at the
same time of day share one CronJob, whose `spec.timeZone` is the configured IANA zone (stable since
Kubernetes 1.27; the API server and the controller load the zone database, or the copy built into
the binary when the host has none: Kubernetes docs, "CronJob", "Time zones"). Around daylight-saving
changes the controller follows the zone's clock: a time that does not exist that day is skipped.
A wake raises the inference Deployment to hpaMinReplicas when it has fewer (its HPA owns the count
above) and sets the placeholders to gpuHeadroom exactly.

Between the edges, the state converges once, when Pulumi makes it wrong: the edges alone would
leave a Deployment created after the closing time (by an `up` on Friday evening) at its creation
count until the next edge, and a gpuHeadroom changed during a window would wait for the next
morning. So a Job named after the scaled Deployments' uids and the schedule's arguments
(`embeddings-converge-<hash>`) runs the scaler's `converge` (wake inside the windows, sleep
outside): once per creation or replacement of a scaled Deployment and per change of servingHours,
hpaMinReplicas or gpuHeadroom, since only those change its name. A wake by hand (README) changes
none of them, so it is never undone before the next closing edge. The Job is kept after it
finishes (no ttlSecondsAfterFinished): deleted, a `pulumi refresh` would see it gone and the next
`up` would run it again, ending a wake by hand.

Least privilege: the scaler's service account may only get and patch `deployments/scale` of the
named Deployments (resourceNames), one Role per namespace; its token is projected for ten minutes
into the only pods that use it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from infra import gpu_spec, inference, scaler, versions
from infra.config import MINUTES_PER_DAY, ServingHours, awake_spans

APP_NAME: Final = "embeddings-scaler"
SELECTOR: Final = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": "schedule"}
LABELS: Final = {**SELECTOR, "app.kubernetes.io/part-of": "gpu-inference"}
SCRIPT: Final = Path(scaler.__file__)
SCRIPT_DIR: Final = "/opt/scaler"
RUN_AS: Final = 65534
"""nobody: the python image has no user of its own; nothing is written."""
STARTING_DEADLINE_SECONDS: Final = 3600
"""A run the controller could not start on time (control plane upgrade) still runs within the hour;
later, the day keeps its state until the next edge or a hand-made scale."""
TOKEN_SECONDS: Final = 600
"""Lifetime of the projected token (the kubelet's minimum); a run takes seconds."""
CRON_DAYS: Final = ("1", "2", "3", "4", "5", "6", "0")
"""Cron day-of-week numbers for Monday..Sunday (0 is Sunday)."""


@dataclass(frozen=True)
class ScaledDeployment:
    namespace: str
    name: str
    replicas: int
    """What a wake scales it to (hpaMinReplicas; gpuHeadroom for the placeholders)."""
    exact: bool
    """No HPA scales it (the placeholders): a wake sets `replicas` whatever the count, rather than
    raising it to `replicas`."""
    uid: pulumi.Input[str]
    """The Deployment's `metadata.uid`: a new one (creation, replacement) runs the converge Job."""

    @property
    def spec(self) -> str:
        """The scaler's wake argument: `ns/name=N` (exact) or `ns/name>=N` (at least)."""
        return f"{self.namespace}/{self.name}{'=' if self.exact else '>='}{self.replicas}"


@dataclass(frozen=True)
class ScaleEvent:
    """One CronJob: at `minute` of the day on `days` (0 = Monday), wake or sleep."""

    action: str
    minute: int
    days: tuple[int, ...]

    @property
    def name(self) -> str:
        """`embeddings-wake-0700`: what `kubectl get cronjobs` lists."""
        return f"{inference.APP_NAME}-{self.action}-{self.minute // 60:02d}{self.minute % 60:02d}"

    @property
    def cron(self) -> str:
        days = ",".join(CRON_DAYS[day] for day in self.days)
        return f"{self.minute % 60} {self.minute // 60} * * {days}"


def scale_events(hours: ServingHours) -> list[ScaleEvent]:
    """Wakes at every merged span's opening, sleeps at its close; same time of day, one event."""
    week = 7 * MINUTES_PER_DAY
    by_time: dict[tuple[str, int], set[int]] = defaultdict(set)
    for opened, closed in awake_spans(hours.windows):
        for action, edge in (("wake", opened), ("sleep", closed % week)):
            day, minute = divmod(edge, MINUTES_PER_DAY)
            by_time[(action, minute)].add(day)
    return [
        ScaleEvent(action, minute, tuple(sorted(days)))
        for (action, minute), days in sorted(by_time.items())
    ]


def command(
    action: str, targets: tuple[ScaledDeployment, ...], hours: ServingHours | None = None
) -> list[str]:
    """The scaler's command line; `converge` needs the hours (the windows as the program merged
    them, so the Job and the CronJobs agree on every edge)."""
    if action == "sleep":
        specs = [f"{t.namespace}/{t.name}" for t in targets]
    else:
        specs = [t.spec for t in targets]
    options: list[str] = []
    if action == "converge":
        assert hours is not None
        spans = ",".join(f"{opened}-{closed}" for opened, closed in awake_spans(hours.windows))
        options = ["--timezone", hours.timezone, "--awake", spans]
    return ["python", f"{SCRIPT_DIR}/{SCRIPT.name}", action, *options, *specs]


def pod_spec(command_line: list[str]) -> dict[str, Any]:
    return {
        "serviceAccountName": APP_NAME,
        # The token is projected below, short-lived, into these pods only.
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "nodeSelector": gpu_spec.system_node_selector(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "scaler",
                "image": versions.PYTHON_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": command_line,
                "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "200m", "memory": "64Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
                    {"name": "api", "mountPath": scaler.ACCOUNT_DIR, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "script", "configMap": {"name": APP_NAME, "defaultMode": 0o444}},
            {
                "name": "api",
                "projected": {
                    "defaultMode": 0o444,
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "token",
                                "expirationSeconds": TOKEN_SECONDS,
                            }
                        },
                        # Published in every namespace by the control plane (the API server's CA).
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ],
                },
            },
        ],
    }


def job_spec(command_line: list[str]) -> dict[str, Any]:
    return {
        "backoffLimit": 4,
        "activeDeadlineSeconds": 600,
        "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec(command_line)},
    }


def cron_job_spec(
    event: ScaleEvent, hours: ServingHours, targets: tuple[ScaledDeployment, ...]
) -> dict[str, Any]:
    return {
        "schedule": event.cron,
        "timeZone": hours.timezone,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"spec": job_spec(command(event.action, targets))},
    }


def converge_job_name(uids: list[str], command_line: list[str]) -> str:
    """`embeddings-converge-<10 hex>`: new for new Deployments (uids) or new arguments."""
    digest = hashlib.sha256(json.dumps([uids, command_line]).encode()).hexdigest()[:10]
    return f"{inference.APP_NAME}-converge-{digest}"


def role_rules(names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": sorted(names),
            "verbs": ["get", "patch"],
        }
    ]


@dataclass(frozen=True)
class ScheduleArgs:
    namespace: str
    """Where the CronJobs, their account and script live (the inference namespace)."""
    hours: ServingHours
    targets: tuple[ScaledDeployment, ...]
    """The inference Deployment first (woken first), then the placeholders."""
    depends_on: tuple[pulumi.Resource, ...] = ()
    """The namespaces and Deployments scaled."""


class ServingSchedule(pulumi.ComponentResource):
    cron_jobs: list[k8s.batch.v1.CronJob]
    converge_job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: ScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:schedule:ServingSchedule", name, None, opts)
        ns = args.namespace
        deps = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))

        def meta(namespace: str = ns) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=APP_NAME, namespace=namespace, labels=dict(LABELS)
            )

        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=meta(),
            automount_service_account_token=False,
            opts=deps,
        )
        names: dict[str, list[str]] = defaultdict(list)
        for target in args.targets:
            names[target.namespace].append(target.name)
        bindings: list[pulumi.Resource] = []
        for namespace, deployments in sorted(names.items()):
            suffix = "" if namespace == ns else f"-{namespace}"
            role = k8s.rbac.v1.Role(
                f"{name}-role{suffix}",
                metadata=meta(namespace),
                rules=role_rules(deployments),
                opts=deps,
            )
            bindings.append(
                k8s.rbac.v1.RoleBinding(
                    f"{name}-role-binding{suffix}",
                    metadata=meta(namespace),
                    role_ref={
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": APP_NAME,
                    },
                    subjects=[{"kind": "ServiceAccount", "name": APP_NAME, "namespace": ns}],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[role, account]),
                )
            )
        script = k8s.core.v1.ConfigMap(
            f"{name}-script",
            metadata=meta(),
            data={SCRIPT.name: SCRIPT.read_text(encoding="utf-8")},
            opts=deps,
        )
        # The scaler only calls the API server (the `kubernetes` Service, port 443 on EKS).
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=meta(),
            spec={
                "podSelector": {"matchLabels": dict(SELECTOR)},
                "policyTypes": ["Ingress", "Egress"],
                "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
            },
            opts=deps,
        )
        converge = command("converge", args.targets, args.hours)
        self.converge_job = k8s.batch.v1.Job(
            f"{name}-converge",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=pulumi.Output.all(*(t.uid for t in args.targets)).apply(
                    lambda uids: converge_job_name([str(u) for u in uids], converge)
                ),
                namespace=ns,
                labels=dict(LABELS),
            ),
            spec=job_spec(converge),
            # A new name is a new Job: the old one is deleted once the new one has run.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[script, *bindings]),
        )
        self.cron_jobs = [
            k8s.batch.v1.CronJob(
                f"{name}-{event.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=event.name, namespace=ns, labels=dict(LABELS)
                ),
                spec=cron_job_spec(event, args.hours, args.targets),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[script, *bindings]),
            )
            for event in scale_events(args.hours)
        ]
        self.register_outputs({"cronJobs": [event.name for event in scale_events(args.hours)]})


def describe(hours: ServingHours | None) -> dict[str, Any] | None:
    """The `servingHours` stack output: when clients find the endpoint up (None: always)."""
    if hours is None:
        return None
    events = scale_events(hours)
    return {
        "timezone": hours.timezone,
        "wake": [event.cron for event in events if event.action == "wake"],
        "sleep": [event.cron for event in events if event.action == "sleep"],
    }
