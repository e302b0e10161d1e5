"""Grafana, wired to the program's Prometheus and dashboard: one port-forward from a first look.

The upstream chart (grafana-community/helm-charts, pinned in infra/versions.py) runs one Grafana
on the system nodes with nothing exposed outside the cluster. Everything it shows is provisioned
from this repository, so there is nothing to click together and nothing to lose:

- the Prometheus data source at the Service the Prometheus chart renders (the default source, which
  the dashboard's `datasource` variable picks);
- the inference dashboard from the ConfigMap the monitoring component builds from
  infra/dashboard.py (mounted through the chart's `dashboardsConfigMaps`: no sidecar, no API
  access, no RBAC), and it is the home page;
- the admin password: a RandomPassword kept encrypted in the state, in a Secret the pod reads as a
  file (never in the chart values, never an environment variable), exported as the secret
  `grafanaAdminPassword`.

No persistence: data source and dashboard are provisioned at every start and Grafana's own
database only holds sessions and preferences, so an EBS volume (pinned to one zone, the pod with
it) would buy nothing. Edits made in the UI are lost on restart; change infra/dashboard.py instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import versions
from infra.charts import chart_args

FULLNAME: Final = "grafana"
"""The chart's fullname for release `grafana` (helper grafana.fullname: the release name when it
contains the chart name): its Deployment, Service and NetworkPolicy are named this."""
SERVICE_PORT: Final = 80
"""The chart's Service port (`service.port`), forwarding to the container's 3000."""
CONTAINER_PORT: Final = 3000
ADMIN_SECRET: Final = "grafana-admin"
ADMIN_USER: Final = "admin"
ADMIN_USER_KEY: Final = "admin-user"
ADMIN_PASSWORD_KEY: Final = "admin-password"
ADMIN_DIR: Final = "/etc/grafana-admin"
"""Where the admin Secret is mounted (files, not environment variables)."""
DATASOURCE_UID: Final = "prometheus"
DASHBOARD_PROVIDER: Final = "gpu-inference"
"""The provider folder: the chart mounts the ConfigMap at /var/lib/grafana/dashboards/<provider>."""
DASHBOARDS_DIR: Final = f"/var/lib/grafana/dashboards/{DASHBOARD_PROVIDER}"
RESTRICTED_CONTAINER: Final = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""Pod Security `restricted`, plus a read-only root file system (Grafana writes only to its data,
search-index and /tmp volumes)."""


@dataclass(frozen=True)
class GrafanaArgs:
    namespace: str
    system_node_selector: Mapping[str, str]
    prometheus_url: str
    """The Prometheus server's in-cluster URL (infra.monitoring.prometheus_url)."""
    prometheus_pod_labels: Mapping[str, str]
    """The only pods Grafana may connect to (its NetworkPolicy's egress)."""
    prometheus_port: int
    """The server container's port (a NetworkPolicy sees the pod port, not the Service port)."""
    dashboard_config_map: str
    """The ConfigMap (in `namespace`) with the dashboard JSON, one file per dashboard."""
    dashboard_file: str
    """The file in that ConfigMap that is Grafana's home page."""
    scrape_interval: str
    """Prometheus' scrape interval: Grafana's minimum step (`timeInterval`), so `$__rate_interval`
    always spans enough samples."""


def datasources(args: GrafanaArgs) -> dict[str, Any]:
    """The chart's `datasources` value: one provisioning file with the Prometheus source."""
    return {
        "datasources.yaml": {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus",
                    "type": "prometheus",
                    "uid": DATASOURCE_UID,
                    "url": args.prometheus_url,
                    "access": "proxy",
                    "isDefault": True,
                    "editable": False,
                    "jsonData": {"timeInterval": args.scrape_interval, "httpMethod": "POST"},
                }
            ],
        }
    }


def grafana_values(args: GrafanaArgs) -> dict[str, Any]:
    return {
        "fullnameOverride": FULLNAME,
        "nodeSelector": dict(args.system_node_selector),
        "replicas": 1,
        # The admin credentials as mounted files, not secretKeyRef environment variables: the pod
        # spec references no secret in its env (checkov CKV_K8S_35), and `kubectl describe` shows
        # file paths only. The image's run.sh reads GF_<KEY>__FILE into
        # GF_<KEY> for Grafana's own process at start (packaging/docker/run.sh in grafana/grafana).
        # The chart then renders neither secret env vars nor a Secret of its own
        # (templates/_pod.tpl, templates/secret.yaml).
        "admin": {"existingSecret": ADMIN_SECRET},
        "env": {
            "GF_SECURITY_ADMIN_USER__FILE": f"{ADMIN_DIR}/{ADMIN_USER_KEY}",
            "GF_SECURITY_ADMIN_PASSWORD__FILE": f"{ADMIN_DIR}/{ADMIN_PASSWORD_KEY}",
        },
        "extraSecretMounts": [
            {
                "name": "admin-credentials",
                "secretName": ADMIN_SECRET,
                "mountPath": ADMIN_DIR,
                "readOnly": True,
                # Owner and group (fsGroup) only; the chart writes defaultMode verbatim.
                "defaultMode": 0o440,
            }
        ],
        "persistence": {"enabled": False},
        # The chart's test pod is a Helm hook (helm.v4.Chart drops hooks) pulling another image.
        "testFramework": {"enabled": False},
        # Provisioning from files needs no Kubernetes API: no token, no (Cluster)Role.
        "rbac": {"create": False},
        "automountServiceAccountToken": False,
        "serviceAccount": {"automountServiceAccountToken": False},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 472,
            "runAsGroup": 472,
            "fsGroup": 472,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containerSecurityContext": dict(RESTRICTED_CONTAINER),
        "extraEmptyDirMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "datasources": datasources(args),
        "dashboardProviders": {
            "dashboardproviders.yaml": {
                "apiVersion": 1,
                "providers": [
                    {
                        "name": DASHBOARD_PROVIDER,
                        "orgId": 1,
                        "folder": "GPU inference",
                        "type": "file",
                        "disableDeletion": True,
                        "allowUiUpdates": False,
                        "options": {"path": DASHBOARDS_DIR},
                    }
                ],
            }
        },
        "dashboardsConfigMaps": {DASHBOARD_PROVIDER: args.dashboard_config_map},
        "grafana.ini": {
            # The first page after login is the inference dashboard.
            "dashboards": {
                "default_home_dashboard_path": f"{DASHBOARDS_DIR}/{args.dashboard_file}"
            },
            # No calls home: the NetworkPolicy lets Grafana reach Prometheus and DNS only.
            "analytics": {
                "check_for_updates": False,
                "check_for_plugin_updates": False,
                "reporting_enabled": False,
            },
            "users": {"allow_sign_up": False},
            "auth.anonymous": {"enabled": False},
        },
        "networkPolicy": {
            "enabled": True,
            "ingress": True,
            # Only pods labelled grafana-client=true reach port 3000. Kubelet probes and `kubectl
            # port-forward` come through the node, which a NetworkPolicy always admits ("traffic to
            # and from the node where a Pod is running is always allowed", Kubernetes docs,
            # concepts/services-networking/network-policies).
            "allowExternal": False,
            "egress": {
                "enabled": True,
                "ports": [{"port": args.prometheus_port, "protocol": "TCP"}],
                "to": [{"podSelector": {"matchLabels": dict(args.prometheus_pod_labels)}}],
            },
        },
    }


def port_forward_command(namespace: str, local_port: int = CONTAINER_PORT) -> str:
    """How a person opens Grafana (exported as `grafanaPortForward`)."""
    return f"kubectl -n {namespace} port-forward svc/{FULLNAME} {local_port}:{SERVICE_PORT}"


class Grafana(pulumi.ComponentResource):
    """Grafana with the Prometheus data source and the dashboard provisioned, admin password
    generated."""

    def __init__(
        self, name: str, args: GrafanaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:grafana:Grafana", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Generated once and kept in the state (encrypted); `pulumi up` never changes it.
        password = random.RandomPassword(
            f"{name}-admin-password", length=32, special=False, opts=child
        )
        admin = k8s.core.v1.Secret(
            f"{name}-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=ADMIN_SECRET, namespace=args.namespace),
            type="Opaque",
            string_data={ADMIN_USER_KEY: ADMIN_USER, ADMIN_PASSWORD_KEY: password.result},
            opts=child,
        )
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            chart_args(versions.GRAFANA, args.namespace, grafana_values(args)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[admin]),
        )
        self.admin_user = ADMIN_USER
        self.admin_password = pulumi.Output.secret(password.result)
        self.port_forward = port_forward_command(args.namespace)
        self.register_outputs({"adminUser": ADMIN_USER, "adminPassword": self.admin_password})
