"""Prometheus, prometheus-adapter and metrics-server: the metrics half of the autoscaling chain.

Chart choice: the prometheus-community `prometheus` chart (server, kube-state-metrics,
Alertmanager), not kube-prometheus-stack. Scrape jobs here are plain Prometheus configuration
(infra/scrape.py), so the metrics-chain test can run the very same jobs on a real Prometheus;
kube-prometheus-stack would express them as ServiceMonitor/PodMonitor objects that only the Operator
turns into configuration, adds CRDs and an operator to every cluster, and leaves the rendered scrape
config untestable offline.

metrics-server comes from its chart (pinned in infra/versions.py) for `kubectl top` and CPU/memory
HPA metrics; prometheus-adapter serves only `custom.metrics.k8s.io` (no resource rules), so the two
APIServices never conflict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import adapter_rules, alerting, gpu_spec, scrape, versions
from infra.charts import APISERVICE_V1, chart_args
from infra.config import AlertReceiver
from infra.namespaces import pod_security_namespace

NAMESPACE: Final = "monitoring"
"""Prometheus, Alertmanager, kube-state-metrics, prometheus-adapter and the dashboards."""
PROMETHEUS_RELEASE: Final = versions.PROMETHEUS.chart
PROMETHEUS_SERVER_NAME: Final = "prometheus-server"
"""fullnameOverride of the server, so its Service name does not depend on the release name."""
PROMETHEUS_SERVICE_PORT: Final = 80
"""The chart's server Service port (it forwards to the container's 9090)."""
PROMETHEUS_CONTAINER_PORT: Final = 9090
"""The server container's port (`server.service.targetPort` default, Prometheus' own default)."""
STORAGE_CLASS: Final = "gp3-encrypted"
VOLUME_TAG: Final = "gpu-inference.io/cluster"
"""Tag on every EBS volume of the storage class (value: the cluster name): what README "Tear down"
lists to prove that `pulumi destroy` left no volume behind."""
PROMETHEUS_CLAIM: Final = "storage-prometheus-server"
"""Named like Alertmanager's (`storage-<workload>`)."""
ALERTMANAGER_NAME: Final = "prometheus-alertmanager"
"""fullnameOverride of Alertmanager: its StatefulSet's name, which its claim's name is made of."""
ALERTMANAGER_CLAIM_TEMPLATE: Final = "storage"
"""The alertmanager chart's volumeClaimTemplate name (templates/statefulset.yaml, chart 1.30.0)."""
ALERTMANAGER_CLAIM: Final = f"{ALERTMANAGER_CLAIM_TEMPLATE}-{ALERTMANAGER_NAME}-0"
"""`<template>-<statefulset>-<ordinal>`: the claim the StatefulSet controller looks for and uses
when it exists, so it uses ours (kubernetes pkg/controller/statefulset/stateful_pod_control.go:
createPersistentVolumeClaims creates one only when GetClaim answers NotFound)."""
ALERTMANAGER_VOLUME_GIB: Final = 2
ALERT_RULES_FILE: Final = "alerting_rules.yml"
"""A file the chart's default prometheus.yml already lists under rule_files."""
DASHBOARD_LABEL: Final = {"grafana_dashboard": "1"}
"""What the Grafana chart's dashboard sidecar watches for (its default
`sidecar.dashboards.label`)."""


def prometheus_server_pod_labels() -> dict[str, str]:
    """Labels of the Prometheus server pods (chart helper `prometheus.server.matchLabels`).

    The inference NetworkPolicy admits exactly these pods to the metrics port.
    """
    return {
        "app.kubernetes.io/name": "prometheus",
        "app.kubernetes.io/instance": PROMETHEUS_RELEASE,
        "app.kubernetes.io/component": "server",
    }


def dashboard_config_map(file_name: str) -> str:
    """The ConfigMap that holds one dashboard file (what Grafana mounts)."""
    return f"dashboard-{file_name.removesuffix('.json')}"


def prometheus_url(namespace: str) -> str:
    return (
        f"http://{PROMETHEUS_SERVER_NAME}.{namespace}.svc.cluster.local:{PROMETHEUS_SERVICE_PORT}"
    )


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: str
    cluster_name: str
    """Tags the volumes (VOLUME_TAG)."""
    system_node_selector: Mapping[str, str]
    retention: str
    """Prometheus duration, e.g. "15d"."""
    volume_size_gib: int
    scrape: scrape.ScrapeSettings
    alert_rules: Mapping[str, Any] | None = None
    """A Prometheus rule file ({"groups": [...]}) deployed with the server."""
    dashboards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Grafana dashboards by file name, each deployed as a ConfigMap for the Grafana sidecar."""
    alert_receivers: tuple[AlertReceiver, ...] = ()
    """Where Alertmanager delivers (infra/alerting.py); empty: nowhere, and the preview warns."""
    stack_file: str = "Pulumi.<stack>.yaml"
    """Named in the preview warning when alerts reach nobody."""
    adapter_replicas: int = 2
    """The HPA is blind while the adapter is down: two replicas and a PDB keep one through node
    drains."""

    def __post_init__(self) -> None:
        if self.volume_size_gib < 1:
            raise ValueError(f"volume_size_gib={self.volume_size_gib}: must be >= 1")
        if self.adapter_replicas < 1:
            raise ValueError(f"adapter_replicas={self.adapter_replicas}: must be >= 1")


def _retention_size(volume_size_gib: int) -> str:
    # Size-based retention below the volume size, so a burst of series cannot fill the disk before
    # time-based retention catches up (a full TSDB volume stops ingestion: the HPA would go blind).
    return f"{max(1, int(volume_size_gib * 0.8))}GB"


_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEFAULT_SCRAPE_TIMEOUT_MS: Final = 10_000


def scrape_timeout(interval: str) -> str:
    """The chart's 10 s scrape timeout, or the interval when that is shorter: Prometheus refuses a
    configuration whose timeout exceeds its interval."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", interval)
    if match is None:
        raise ValueError(f"scrape interval {interval!r}: expected a duration like 15s or 1m")
    interval_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    timeout_ms = min(interval_ms, DEFAULT_SCRAPE_TIMEOUT_MS)
    return f"{timeout_ms // 1000}s" if timeout_ms % 1000 == 0 else f"{timeout_ms}ms"


def prometheus_values(args: MonitoringArgs) -> dict[str, Any]:
    on_system = {"nodeSelector": dict(args.system_node_selector)}
    values: dict[str, Any] = {
        "server": {
            **on_system,
            "fullnameOverride": PROMETHEUS_SERVER_NAME,
            "retention": args.retention,
            "retentionSize": _retention_size(args.volume_size_gib),
            "global": {
                "scrape_interval": args.scrape.scrape_interval,
                "scrape_timeout": scrape_timeout(args.scrape.scrape_interval),
                "evaluation_interval": args.scrape.scrape_interval,
            },
            # The claim is ours (Monitoring.volumes), so the chart renders none.
            "persistentVolume": {"enabled": True, "existingClaim": PROMETHEUS_CLAIM},
            # A ReadWriteOnce EBS volume cannot attach to a second pod: replace, never surge.
            "strategy": {"type": "Recreate"},
            "resources": {
                "requests": {"cpu": "250m", "memory": "1Gi"},
                "limits": {"memory": "2Gi"},
            },
        },
        # The chart sets none for its config reloader sidecar (BestEffort otherwise).
        "configmapReload": {"prometheus": {"resources": _small_resources()}},
        # The chart passes this string through `tpl`; the jobs contain no template braces.
        "extraScrapeConfigs": yaml.safe_dump(scrape.scrape_jobs(args.scrape), sort_keys=False),
        # Deployment, HPA, pod and node state for the alert rules (replicas at max, pods pending).
        "kube-state-metrics": {
            "enabled": True,
            **on_system,
            # kube_node_labels exposes only allowlisted labels: the dashboard counts spot vs
            # on-demand GPU nodes by capacity type.
            "metricLabelsAllowlist": [f"nodes=[{gpu_spec.CAPACITY_TYPE_LABEL}]"],
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"memory": "512Mi"},
            },
        },
        "alertmanager": alertmanager_values(args),
        # node-exporter needs the host network and PID namespace (Pod Security `privileged`) on
        # every node; container metrics come from the kubelet's cAdvisor, GPU metrics from DCGM.
        "prometheus-node-exporter": {"enabled": False},
        "prometheus-pushgateway": {"enabled": False},
    }
    if args.alert_rules is not None:
        values["serverFiles"] = {ALERT_RULES_FILE: dict(args.alert_rules)}
    return values


def alertmanager_values(args: MonitoringArgs) -> dict[str, Any]:
    """The chart's Alertmanager (subchart alertmanager 1.30.0) with the stack's routing.

    The chart writes `config` (less its `enabled` key) verbatim into the Alertmanager ConfigMap
    (templates/configmap.yaml of the subchart) and adds `extraVolumes`/`extraVolumeMounts` to the
    StatefulSet (templates/statefulset.yaml); Helm merges maps with the chart defaults, so every key
    of the default configuration is set here and nothing of the chart's placeholder receiver is
    left.
    """
    values: dict[str, Any] = {
        "enabled": True,
        "nodeSelector": dict(args.system_node_selector),
        "fullnameOverride": ALERTMANAGER_NAME,
        # The template must stay: without it the chart mounts an emptyDir. It never creates a
        # claim, because ours (same name, made first: volume_claims) exists.
        "persistence": {
            "enabled": True,
            "size": f"{ALERTMANAGER_VOLUME_GIB}Gi",
            "storageClass": STORAGE_CLASS,
        },
        "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "config": {"enabled": True, **alerting.alertmanager_config(args.alert_receivers)},
    }
    if alerting.secret_files(args.alert_receivers):
        # extraVolumes/extraVolumeMounts (copied verbatim) rather than extraSecretMounts, whose
        # template always writes a `subPath` (null when unset). No subPath: the kubelet refreshes a
        # whole-volume Secret mount in place, and Alertmanager rereads the files at each
        # notification, so a rotated credential needs no restart.
        volume = "receiver-credentials"
        values["extraVolumes"] = [{"name": volume, "secret": {"secretName": alerting.SECRET_NAME}}]
        values["extraVolumeMounts"] = [
            {"name": volume, "mountPath": alerting.SECRETS_DIR, "readOnly": True}
        ]
    return values


def _small_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def adapter_values(args: MonitoringArgs) -> dict[str, Any]:
    return {
        "nodeSelector": dict(args.system_node_selector),
        # The chart sets none; the HPA's custom metrics stop with this pod, so it is not
        # BestEffort (the first evicted under node pressure).
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "replicas": args.adapter_replicas,
        "podDisruptionBudget": {"enabled": args.adapter_replicas > 1, "maxUnavailable": 1},
        "prometheus": {
            "url": f"http://{PROMETHEUS_SERVER_NAME}.{args.namespace}.svc",
            "port": PROMETHEUS_SERVICE_PORT,
        },
        "metricsRelistInterval": adapter_rules.RELIST_INTERVAL,
        "rules": adapter_rules.adapter_rules(),
    }


def metrics_server_values(args: MonitoringArgs) -> dict[str, Any]:
    return {
        "nodeSelector": dict(args.system_node_selector),
        "replicas": 2,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    }


def volume_claims(namespace: str, prometheus_gib: int) -> dict[str, dict[str, Any]]:
    """The claims of Prometheus' and Alertmanager's volumes, by name, as Pulumi resources.

    Made here and not by the chart, so that `pulumi destroy` deletes them, and with them (reclaim
    policy Delete) their EBS volumes. A claim from a StatefulSet's volumeClaimTemplate belongs to no
    release: it outlives the StatefulSet unless the StatefulSet sets
    persistentVolumeClaimRetentionPolicy, which the alertmanager chart (1.30.0) does not offer, so
    its volume would be billed after the stack is gone.
    """
    sizes = {PROMETHEUS_CLAIM: prometheus_gib, ALERTMANAGER_CLAIM: ALERTMANAGER_VOLUME_GIB}
    return {
        name: {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": f"{size}Gi"}},
            },
        }
        for name, size in sizes.items()
    }


class Monitoring(pulumi.ComponentResource):
    """Prometheus with alert rules, prometheus-adapter, metrics-server, dashboards."""

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The charts' pods do not all set seccomp profiles and drop capabilities, which `restricted`
        # requires; `baseline` still forbids host access and privilege.
        self.namespace = pod_security_namespace(
            f"{name}-namespace", args.namespace, "baseline", opts=child, audit="restricted"
        )
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
            provisioner="ebs.csi.aws.com",
            parameters={
                "type": "gp3",
                "encrypted": "true",
                "fsType": "ext4",
                # The driver tags each volume it creates with these (aws-ebs-csi-driver
                # docs/tagging.md, "StorageClass Tagging": tagSpecification_<n>: "key=value").
                "tagSpecification_1": f"{VOLUME_TAG}={args.cluster_name}",
            },
            # Bind in the zone the pod is scheduled in; an EBS volume cannot follow a pod across
            # zones.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.volumes = [
            k8s.core.v1.PersistentVolumeClaim(
                f"{name}-{claim}",
                **fields,
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.namespace, self.storage_class]
                ),
            )
            for claim, fields in volume_claims(args.namespace, args.volume_size_gib).items()
        ]
        # Claims first: the StatefulSet must find Alertmanager's, not make its own; on destroy the
        # pods go first, then the claims.
        chart_needs: list[pulumi.Resource] = [self.namespace, self.storage_class, *self.volumes]
        credentials = alerting.secret_files(args.alert_receivers)
        if credentials:
            chart_needs.append(
                k8s.core.v1.Secret(
                    f"{name}-alert-receivers",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=alerting.SECRET_NAME, namespace=args.namespace
                    ),
                    type="Opaque",
                    # Encrypted in state and masked in every preview: the stack's secret config.
                    string_data=pulumi.Output.secret(credentials),
                    opts=in_namespace,
                )
            )
        warning = alerting.delivery_warning(args.alert_receivers, args.stack_file)
        if warning is not None:
            pulumi.log.warn(warning, resource=self)
        self.prometheus = k8s.helm.v4.Chart(
            f"{name}-prometheus",
            chart_args(versions.PROMETHEUS, args.namespace, prometheus_values(args)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=chart_needs),
        )
        self.adapter = k8s.helm.v4.Chart(
            f"{name}-prometheus-adapter",
            chart_args(
                versions.PROMETHEUS_ADAPTER,
                args.namespace,
                adapter_values(args),
                post_renderer=APISERVICE_V1,
            ),
            opts=in_namespace,
        )
        self.metrics_server = k8s.helm.v4.Chart(
            f"{name}-metrics-server",
            # kube-system: where `kubectl top` users and the chart's own docs expect it.
            chart_args(versions.METRICS_SERVER, "kube-system", metrics_server_values(args)),
            opts=child,
        )
        self.dashboards = [
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{file_name.removesuffix('.json')}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=dashboard_config_map(file_name),
                    namespace=args.namespace,
                    labels=DASHBOARD_LABEL,
                ),
                data={file_name: json.dumps(dashboard, indent=2, sort_keys=True)},
                opts=in_namespace,
            )
            for file_name, dashboard in sorted(args.dashboards.items())
        ]
        self.prometheus_url = prometheus_url(args.namespace)
        self.alert_delivery = alerting.delivery(args.alert_receivers)
        self.register_outputs(
            {"prometheusUrl": self.prometheus_url, "alertDelivery": self.alert_delivery}
        )
