"""Every pinned version the program deploys, in one table.

Each Helm chart is vendored in `charts/` (README "Charts"): `pulumi up` installs that file and the
rehearsal renders the same bytes, checked against the sha256 here. A chart bump is the version,
appVersion and sha256 below plus the archive, which `make charts` fetches from the upstream
repository and compares; reviewers see it in the synth diff (`charts/*.yaml`). Chart versions pin
the images too: each chart's default image tag is its appVersion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KUBERNETES_VERSION: Final = "1.35"
"""The Kubernetes minor of the EKS control plane and of every node group: the one place it is set.

Everything that depends on the minor reads it here: the cluster and its node groups, the managed
add-on versions (`aws.eks.get_addon_version` per minor), the chart renders of the rehearsal (kube
version), cluster-autoscaler (which must be of the same minor: `make check`), and the NVIDIA driver
of the GPU nodes' AMI (GPU_AMI_NVIDIA_DRIVER, checked against the image's CUDA by `make check`).
It is not a stack key: a stack on another minor would run an autoscaler and a driver nobody
checked. An upgrade is a change here, reviewed in the preview diff; EKS moves one minor at a time.

1.35 reached EKS on 2026-01-28; standard support until 2027-03-27, extended support until
2028-03-27 (https://endoflife.date/amazon-eks; EKS user guide "Understand the Kubernetes version
lifecycle on EKS": 14 months of standard support, then 12 of extended). 1.34 left standard support
on 2026-12-02. 1.36 is on EKS too (AL2023 AMIs since awslabs/amazon-eks-ami v20260618) but has no
cluster-autoscaler chart yet (kubernetes/autoscaler: tags cluster-autoscaler-1.36.x, newest chart
9.59.0 carries 1.35.0). `pulumi preview` reads EKS's own calendar (infra/kubernetes_support.py)."""

GPU_AMI_TYPE: Final = "AL2023_x86_64_NVIDIA"
"""EKS-optimised Amazon Linux 2023 with the NVIDIA driver and container toolkit preinstalled.

Chosen over BOTTLEROCKET_x86_64_NVIDIA because Bottlerocket ships its own built-in device plugin,
while this program deploys the upstream NVIDIA device plugin chart (time-slicing config, pinned
version, same DaemonSet on every GPU node). AL2 NVIDIA AMIs are not published for Kubernetes 1.33+.
Published for 1.35: amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260714 (awslabs/amazon-eks-ami
CHANGELOG.md, release 1.35.6-20260714), as is the AL2023 standard AMI of the system group.
"""

SYSTEM_AMI_TYPE: Final = "AL2023_x86_64_STANDARD"

AMI_RELEASE_VERSION: Final[str | None] = None
"""Managed node group AMI release. None: the latest release when a group is created; Pulumi then
records the release in state and never changes it silently. A stack can pin one with the
`amiReleaseVersion` key."""


GPU_AMI_NVIDIA_DRIVER: Final = {"1.35": "580.159.03"}
"""The NVIDIA driver of the GPU_AMI_TYPE AMI per Kubernetes minor (`make check` compares it with the
image's CUDA). 1.35: kmod-nvidia-latest-dkms 580.159.03 in AMI release 1.35.6-20260714
(awslabs/amazon-eks-ami CHANGELOG.md, "AMI Release v20260714", Kubernetes 1.35, column
AL2023_x86_64_NVIDIA); the AMI builds install the R580 branch for 1.34+ (templates/al2023/
variables-default.json `nvidia_driver_major_version: "580"`, commit 3cb8b058 "default to 580 driver
for 1.34+"), so every later 1.35 release stays on R580. A minor bump needs its row here."""

# --- The model image: Python, torch and the CUDA it was built with --------------------------------

PYTHON_VERSION: Final = "3.11"
"""The Python of the server image (Dockerfile PYTHON_IMAGE) and the one CI tests the server on
(every `actions/setup-python` in .github/workflows, `.ci/run`'s Debian 12 python3, mypy's target):
one interpreter, so what the tests pass on is what runs. 3.11 rather than 3.12 because it is the
newest Python this build machine and `.ci/run` can install (Debian 12 ships 3.11 only); torch 2.13
supports 3.10-3.15 (pytorch/pytorch RELEASE.md, Release Compatibility Matrix), and 3.11 is
maintained until 2027-10. `make check` fails when any of them differs."""

TORCH_VERSION: Final = "2.13.0"
"""torch in the image (Dockerfile TORCH_VERSION) and the CPU wheel of `make setup` (Makefile)."""

TORCH_CUDA: Final = "13.0"
"""The CUDA build of torch in the image: the wheels of https://download.pytorch.org/whl/cu130
(Dockerfile TORCH_INDEX_URL). They bring the CUDA 13 user-space libraries (nvidia-*-cu13 wheels, the
same ones PyPI's default torch 2.13.0 depends on); the node brings the driver."""

TORCH_CUDA_BUILDS: Final = {"2.13": ("12.6", "13.0", "13.2")}
"""The CUDA builds PyTorch publishes per release: pytorch/pytorch RELEASE.md, "Release Compatibility
Matrix", 2.13: stable CUDA 12.6 and 13.0, experimental 13.2. 12.8, the image's old cu128 index, was
dropped after 2.11, so `torch==2.13.0` was never on it."""

CUDA_MINIMUM_DRIVER: Final = {"13.0": "580.65.06"}
"""The Linux x86_64 driver each CUDA release needs: NVIDIA CUDA Toolkit release notes, "CUDA Toolkit
and Corresponding Driver Versions" (CUDA 13.0 GA: >= 580.65.06); the R580 branch is the one that
supports CUDA 13.x (NVIDIA data center drivers, "Supported Drivers and CUDA Toolkit Versions")."""


@dataclass(frozen=True)
class HelmChart:
    repository: str
    """The upstream chart repository (`make charts` compares the vendored archive with it)."""
    chart: str
    version: str
    app_version: str
    """The archive's Chart.yaml `appVersion`, exactly (`make check` compares them)."""
    sha256: str
    """Of the vendored archive `charts/<chart>-<version>.tgz`: what `pulumi up` installs and the
    rehearsal renders (infra/charts.py refuses any other bytes)."""
    source: str
    """Where the version was checked (kept next to the pin so the next bump knows where to look)."""
    tracks_kubernetes: bool = False
    """The app is released per Kubernetes minor and must match KUBERNETES_VERSION (`make check`)."""

    @property
    def archive_name(self) -> str:
        """The file name `helm pull` gives the archive."""
        return f"{self.chart}-{self.version}.tgz"


CLUSTER_AUTOSCALER: Final = HelmChart(
    repository="https://kubernetes.github.io/autoscaler",
    chart="cluster-autoscaler",
    version="9.59.0",
    app_version="1.35.0",
    sha256="4630211e5d459045a6811a7be0f8b00091b829464554eb88f97322a78cc26715",
    # "We recommend using Cluster Autoscaler with the Kubernetes control plane version for which it
    # was meant ... versioning scheme was changed to match Kubernetes minor releases exactly"
    # (kubernetes/autoscaler cluster-autoscaler/README.md "Releases", at the tag
    # cluster-autoscaler-chart-9.59.0; its table stops at 1.34, and 1.35.0's go.mod builds on
    # k8s.io/kubernetes v1.35.0). Every chart
    # from 9.54.0 on carries 1.35.0 and grants the resource.k8s.io reads that 1.35's always-on DRA
    # handling needs (config/flags/flags.go: --enable-dynamic-resource-allocation "locked to true");
    # 9.59.0 (2026-07-21) is the newest. The chart's own image tag (v1.35.0) is kept: 1.35.1 and
    # 1.35.2 exist as source tags, but no promotion of their images could be read here.
    tracks_kubernetes=True,
    source="https://github.com/kubernetes/autoscaler/releases/tag/cluster-autoscaler-chart-9.59.0",
)

NVIDIA_DEVICE_PLUGIN: Final = HelmChart(
    repository="https://nvidia.github.io/k8s-device-plugin",
    chart="nvidia-device-plugin",
    version="0.18.2",
    app_version="0.18.2",
    sha256="b9ad1bcae78149a93c4be1e02c53245133c17a13bd6ecd3c9b355c6edb304bdb",
    source="https://github.com/NVIDIA/k8s-device-plugin/releases/tag/v0.18.2",
)

DCGM_EXPORTER: Final = HelmChart(
    repository="https://nvidia.github.io/dcgm-exporter/helm-charts",
    chart="dcgm-exporter",
    version="4.8.2",
    app_version="4.8.2",
    sha256="1c5535c03ebab3f021444df6016fce1cd7871385122e115c6ed24c804b623803",
    # Held below 4.9.0 on purpose: 4.9.0 renames the default DCGM fields and changes units
    # (utilisation becomes a 0..1 ratio), which would silently change the HPA's GPU utilisation
    # target. 4.8.2 rather than 4.8.3: it is the newest release whose published archive was at hand
    # when the charts were vendored (charts/README.md: byte-identical to the gh-pages archive,
    # sha256 = the index.yaml digest). Chart.yaml's appVersion is 4.8.2; the image tag the chart
    # defaults to is 4.5.3-4.8.2-distroless (DCGM 4.5.3). Moving to 4.8.3 is this entry plus its
    # archive (`make charts` fetches it and prints the sha256).
    source="https://docs.nvidia.com/datacenter/dcgm/latest/release-notes/dcgm-exporter.html",
)

PROMETHEUS: Final = HelmChart(
    repository="https://prometheus-community.github.io/helm-charts",
    chart="prometheus",
    version="27.52.0",
    app_version="v3.8.1",
    sha256="b452d784bff11ec0a253d81b44e8bffe6fe603973bb942b9fc56708167066fc4",
    source="https://github.com/prometheus-community/helm-charts/releases/tag/prometheus-27.52.0",
)

PROMETHEUS_ADAPTER: Final = HelmChart(
    repository="https://prometheus-community.github.io/helm-charts",
    chart="prometheus-adapter",
    version="5.2.0",
    app_version="v0.12.0",
    sha256="1a4a14f982e3b96442c746b0912c1cac71f7db594190b9820003a13fd1c95c1c",
    source="https://artifacthub.io/packages/helm/prometheus-community/prometheus-adapter/5.2.0",
)

AWS_LOAD_BALANCER_CONTROLLER: Final = HelmChart(
    repository="https://aws.github.io/eks-charts",
    chart="aws-load-balancer-controller",
    version="1.17.0",
    app_version="v2.17.0",
    sha256="10306157bdb76a1b778a57832ef75ebf42008a2bcaea09dc99c4d17384cad3fd",
    source="https://github.com/aws/eks-charts/releases/tag/v0.0.220",
)

METRICS_SERVER: Final = HelmChart(
    repository="https://kubernetes-sigs.github.io/metrics-server",
    chart="metrics-server",
    version="3.13.0",
    app_version="0.8.0",
    sha256="7a311054f180eb7e20765d57de9d150e2ca28284928dc270c83e7650aa996d9e",
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
    sha256="d5b8d9b4673fec89c0bd9f2cdac49d6cc841cecec02099bf9a4ab3b52e8e6396",
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
    f"docker.io/library/python:{PYTHON_VERSION}-slim-trixie"
    "@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff"
)
"""The image the servingHours CronJobs run (infra/schedule.py): the Dockerfile's base, by the same
index digest (docker-library/repo-info repos/python/remote/3.11-slim-trixie.md; the Dockerfile's
PYTHON_IMAGE argument, which tests/infra/test_schedule.py keeps equal). 43 MB on a system node
instead of the multi-GB inference image, and its standard library is all the scaler needs."""
