"""Every pinned version the program deploys, in one table.

Bumping a version is a one-line change here, and a reviewer sees it in the synth diff
(`charts/*.yaml`). Chart versions pin the images too: each chart's default image tag is its
appVersion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KUBERNETES_VERSION: Final = "1.34"
"""EKS control plane and node minor version.

1.34 reached EKS on 2025-10-06, standard support until 2026-12-02
(https://endoflife.date/amazon-eks). cluster-autoscaler must match this minor (see
CLUSTER_AUTOSCALER below)."""

SUPPORTED_KUBERNETES_VERSIONS: Final = ("1.32", "1.33", "1.34", "1.35")
"""EKS minors this program is tested against (https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html)."""

GPU_AMI_TYPE: Final = "AL2023_x86_64_NVIDIA"
"""EKS-optimised Amazon Linux 2023 with the NVIDIA driver and container toolkit preinstalled.

Chosen over BOTTLEROCKET_x86_64_NVIDIA because Bottlerocket ships its own built-in device plugin,
while this program deploys the upstream NVIDIA device plugin chart (time-slicing config, pinned
version, same DaemonSet on every GPU node). AL2 NVIDIA AMIs are not published for Kubernetes 1.33+.
"""

SYSTEM_AMI_TYPE: Final = "AL2023_x86_64_STANDARD"

AMI_RELEASE_VERSION: Final[str | None] = None
"""Managed node group AMI release. None: the latest release when a group is created; Pulumi then
records the release in state and never changes it silently. A stack can pin one with the
`amiReleaseVersion` key."""


@dataclass(frozen=True)
class HelmChart:
    repository: str
    chart: str
    version: str
    app_version: str
    source: str
    """Where the version was checked (kept next to the pin so the next bump knows where to look)."""


CLUSTER_AUTOSCALER: Final = HelmChart(
    repository="https://kubernetes.github.io/autoscaler",
    chart="cluster-autoscaler",
    version="9.52.1",
    app_version="1.34.x",
    # Chart 9.51.0+ carries cluster-autoscaler 1.34 (compatibility table in kubernetes/autoscaler
    # cluster-autoscaler/README.md); 9.52.1 was released 2025-10-20.
    source="https://github.com/kubernetes/autoscaler/releases/tag/cluster-autoscaler-chart-9.52.1",
)

NVIDIA_DEVICE_PLUGIN: Final = HelmChart(
    repository="https://nvidia.github.io/k8s-device-plugin",
    chart="nvidia-device-plugin",
    version="0.18.2",
    app_version="v0.18.2",
    source="https://github.com/NVIDIA/k8s-device-plugin/releases/tag/v0.18.2",
)

DCGM_EXPORTER: Final = HelmChart(
    repository="https://nvidia.github.io/dcgm-exporter/helm-charts",
    chart="dcgm-exporter",
    version="4.8.2",
    app_version="4.5.3-4.8.2",
    # Held below 4.9.0 on purpose: 4.9.0 renames the default DCGM fields and changes units
    # (utilisation becomes a 0..1 ratio), which would silently change the HPA's GPU utilisation
    # target. 4.8.2 rather than 4.8.3: it is the newest release whose published archive the deploy
    # rehearsal holds (../shared/charts/SOURCES.md: byte-identical to the gh-pages archive, sha256
    # = the index.yaml digest), so `make synth` renders exactly what `pulumi up` installs. Moving to
    # 4.8.3 is this line plus its archive (`make charts`); the rehearsal fails until it is there.
    source="https://docs.nvidia.com/datacenter/dcgm/latest/release-notes/dcgm-exporter.html",
)

PROMETHEUS: Final = HelmChart(
    repository="https://prometheus-community.github.io/helm-charts",
    chart="prometheus",
    version="27.52.0",
    app_version="v3.8.x",
    source="https://github.com/prometheus-community/helm-charts/releases/tag/prometheus-27.52.0",
)

PROMETHEUS_ADAPTER: Final = HelmChart(
    repository="https://prometheus-community.github.io/helm-charts",
    chart="prometheus-adapter",
    version="5.2.0",
    app_version="v0.12.0",
    source="https://artifacthub.io/packages/helm/prometheus-community/prometheus-adapter/5.2.0",
)

AWS_LOAD_BALANCER_CONTROLLER: Final = HelmChart(
    repository="https://aws.github.io/eks-charts",
    chart="aws-load-balancer-controller",
    version="1.17.0",
    app_version="v2.17.0",
    source="https://github.com/aws/eks-charts/releases/tag/v0.0.220",
)

METRICS_SERVER: Final = HelmChart(
    repository="https://kubernetes-sigs.github.io/metrics-server",
    chart="metrics-server",
    version="3.13.0",
    app_version="v0.8.0",
    # The chart rather than the EKS community add-on: the chart lets us pin the version in this
    # table, put it on system nodes with the same nodeSelector as every other add-on, and the
    # preview shows its objects.
    source="https://github.com/kubernetes-sigs/metrics-server/releases/tag/metrics-server-helm-chart-3.13.0",
)

GRAFANA: Final = HelmChart(
    repository="https://grafana-community.github.io/helm-charts",
    chart="grafana",
    version="12.11.1",
    app_version="13.2.0",
    # The chart moved from grafana/helm-charts (deprecated there after 10.5.15) to
    # grafana-community/helm-charts; 12.11.1 is tag grafana-12.11.1 there.
    source="https://github.com/grafana-community/helm-charts/releases/tag/grafana-12.11.1",
)

HELM_CHARTS: Final = (
    CLUSTER_AUTOSCALER,
    NVIDIA_DEVICE_PLUGIN,
    DCGM_EXPORTER,
    PROMETHEUS,
    PROMETHEUS_ADAPTER,
    AWS_LOAD_BALANCER_CONTROLLER,
    METRICS_SERVER,
    GRAFANA,
)

EKS_ADDONS: Final = (
    "vpc-cni",
    "kube-proxy",
    "eks-pod-identity-agent",
    "coredns",
    "aws-ebs-csi-driver",
    "eks-node-monitoring-agent",
)
"""Managed add-ons. Their versions are resolved per Kubernetes version with
`aws.eks.get_addon_version` (most_recent=False: the version AWS marks default for that minor) so an
upgrade of KUBERNETES_VERSION moves them in the same preview; the resolved version is recorded in
state and shown in the diff."""

PYTHON_IMAGE: Final = (
    "docker.io/library/python:3.12-slim-trixie"
    "@sha256:229a2c5bfa27522db7815ea81f9bed70af17ccb9de9fc7ad142b1877b5830d36"
)
"""The image the servingHours CronJobs run (infra/schedule.py): the Dockerfile's base, by the same
index digest (docker-library/repo-info repos/python/remote/3.12-slim-trixie.md; the Dockerfile's
PYTHON_IMAGE argument, which tests/infra/test_schedule.py keeps equal). 43 MB on a system node
instead of the multi-GB inference image, and its standard library is all the scaler needs."""
