"""Stack configuration, parsed once into frozen dataclasses, with every check in one place.

Each key is declared once in infra/keys.py: type, bounds or pattern, default, description and the
dataclass field it fills (how to add one is in that module's docstring). This module reads the keys
there, fills each section's dataclass (`_filled`), computes what derives from several keys (subnets,
the cluster name, node groups, alert receivers) and checks the rules that involve several keys.
Components receive these dataclasses and never read `pulumi.Config`. A bad value raises
`ConfigError` naming the stack file, the key, the value and what is allowed, before any resource is
registered."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from infra import keys, versions

# Components and tests import PROJECT and ConfigError from here.
from infra.keys import PROJECT as PROJECT
from infra.keys import ConfigError as ConfigError
from infra.keys import Errors, StackKeys

# --- Tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInstanceType:
    """What the program needs to know of a GPU instance type: autoscaler tags, capacity checks."""

    gpu_model: str
    """The value of the autoscaler's accelerator label (cluster-autoscaler's GPU label on AWS)."""
    gpus: int
    gpu_memory_gib: int
    """Per GPU."""
    vcpus: int
    memory_gib: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """What cluster-autoscaler assumes is identical across a group's instance types when it
        builds a node template: GPU count, vCPUs and memory. Mixing shapes makes its scale-up
        simulation wrong."""
        return (self.gpus, self.vcpus, self.memory_gib)


def _family(
    model: str, gpu_mem: int, sizes: dict[str, tuple[int, int, int]]
) -> dict[str, GpuInstanceType]:
    return {
        size: GpuInstanceType(model, gpus, gpu_mem, vcpus, mem)
        for size, (gpus, vcpus, mem) in sizes.items()
    }


# https://aws.amazon.com/ec2/instance-types/ (accelerated computing): (GPUs, vCPUs, memory GiB) per
# size.
GPU_INSTANCE_TYPES: Final[dict[str, GpuInstanceType]] = {
    **_family(
        "nvidia-tesla-t4",
        16,
        {
            "g4dn.xlarge": (1, 4, 16),
            "g4dn.2xlarge": (1, 8, 32),
            "g4dn.4xlarge": (1, 16, 64),
            "g4dn.8xlarge": (1, 32, 128),
            "g4dn.12xlarge": (4, 48, 192),
            "g4dn.16xlarge": (1, 64, 256),
        },
    ),
    **_family(
        "nvidia-a10g",
        24,
        {
            "g5.xlarge": (1, 4, 16),
            "g5.2xlarge": (1, 8, 32),
            "g5.4xlarge": (1, 16, 64),
            "g5.8xlarge": (1, 32, 128),
            "g5.12xlarge": (4, 48, 192),
            "g5.16xlarge": (1, 64, 256),
            "g5.24xlarge": (4, 96, 384),
            "g5.48xlarge": (8, 192, 768),
        },
    ),
    **_family(
        "nvidia-l4",
        24,
        {
            "g6.xlarge": (1, 4, 16),
            "g6.2xlarge": (1, 8, 32),
            "g6.4xlarge": (1, 16, 64),
            "g6.8xlarge": (1, 32, 128),
            "g6.12xlarge": (4, 48, 192),
            "g6.16xlarge": (1, 64, 256),
            "g6.24xlarge": (4, 96, 384),
            "g6.48xlarge": (8, 192, 768),
        },
    ),
    **_family(
        "nvidia-l40s",
        48,
        {
            "g6e.xlarge": (1, 4, 32),
            "g6e.2xlarge": (1, 8, 64),
            "g6e.4xlarge": (1, 16, 128),
            "g6e.8xlarge": (1, 32, 256),
            "g6e.12xlarge": (4, 48, 384),
            "g6e.16xlarge": (1, 64, 512),
        },
    ),
    **_family("nvidia-tesla-v100", 16, {"p3.2xlarge": (1, 8, 61), "p3.8xlarge": (4, 32, 244)}),
    **_family("nvidia-a100", 40, {"p4d.24xlarge": (8, 96, 1152)}),
}

# Commercial and China/GovCloud regions that offer EKS and NVIDIA instances.
REGIONS: Final = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1",
        "eu-south-1", "eu-south-2", "ap-south-1", "ap-south-2", "ap-northeast-1", "ap-northeast-2",
        "ap-northeast-3", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
        "ap-east-1", "me-south-1", "me-central-1", "il-central-1", "af-south-1",
        "cn-north-1", "cn-northwest-1", "us-gov-west-1", "us-gov-east-1",
    }
)  # fmt: skip

CAPACITY_TYPES: Final = ("SPOT", "ON_DEMAND")

# Kubelet, OS and the DaemonSets on every GPU node (aws-node, kube-proxy, pod identity agent, EBS
# CSI node, NVIDIA device plugin, DCGM exporter) take roughly this much; an inference pod gets the
# rest.
NODE_OVERHEAD_CPU: Final = 1.0
NODE_OVERHEAD_MEMORY_GIB: Final = 3.0

_WORLD: Final = ipaddress.ip_network("0.0.0.0/0")
_NAME: Final = re.compile(keys.NAME)
_INSTANCE_TYPE: Final = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_ACM_CERTIFICATE: Final = re.compile(keys.ACM_CERTIFICATE)


# --- Parsed configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExistingNetwork:
    vpc_id: str
    private_subnet_ids: tuple[str, ...]
    public_subnet_ids: tuple[str, ...]


@dataclass(frozen=True)
class NetworkConfig:
    availability_zones: tuple[str, ...]
    vpc_cidr: str
    private_subnet_cidrs: tuple[str, ...]
    """One per AZ, computed from `vpcCidr` and `privateSubnetPrefixLength` (nodes and pods)."""
    public_subnet_cidrs: tuple[str, ...]
    """One per AZ, after the private ones (NAT gateways and internet-facing load balancers)."""
    nat_per_az: bool
    existing: ExistingNetwork | None


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kubernetes_version: str
    """infra/versions.py KUBERNETES_VERSION (not a stack key)."""
    support_type: str
    """What EKS does at the end of the minor's standard support: EXTENDED keeps it (billed at the
    extended rate), STANDARD upgrades the control plane; the preview stops in the second case
    (infra/kubernetes_support.py)."""
    endpoint_public_access: bool
    public_access_cidrs: tuple[str, ...]
    allow_world_api_access: bool
    """0.0.0.0/0 may be in public_access_cidrs of a production stack."""
    private_api_access_cidrs: tuple[str, ...]
    """Networks outside the cluster (a CI runner's subnet, a VPN) that may reach the private
    endpoint on 443."""
    admin_principal_arns: tuple[str, ...]
    deploy_role_arn: str | None
    """The CI deploy role of this stack: cluster-admin, like adminPrincipalArns."""
    preview_role_arn: str | None
    """The CI preview role of this stack: read-only."""
    log_types: tuple[str, ...]

    @property
    def admins(self) -> tuple[str, ...]:
        """Every principal that gets cluster-admin (the creator gets nothing: see cluster.py)."""
        return (*self.admin_principal_arns, *filter(None, [self.deploy_role_arn]))

    @property
    def viewers(self) -> tuple[str, ...]:
        return tuple(filter(None, [self.preview_role_arn]))


@dataclass(frozen=True)
class NodeGroupConfig:
    name: str
    capacity_type: str
    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    disk_gib: int
    gpu: GpuInstanceType | None
    """The group's GPU shape (its first instance type; all share it). None for the system group."""

    @property
    def is_spot(self) -> bool:
        return self.capacity_type == "SPOT"

    @property
    def accelerator(self) -> str:
        """Accelerator label value: the GPU model when the group has one, else 'nvidia'."""
        models = {GPU_INSTANCE_TYPES[t].gpu_model for t in self.instance_types}
        return models.pop() if len(models) == 1 else "nvidia"

    @property
    def min_gpu_memory_gib(self) -> int:
        return min(GPU_INSTANCE_TYPES[t].gpu_memory_gib for t in self.instance_types)


@dataclass(frozen=True)
class NodeGroupsConfig:
    system: NodeGroupConfig
    gpu: tuple[NodeGroupConfig, ...]
    ami_release_version: str | None


@dataclass(frozen=True)
class AutoscalerConfig:
    scale_down_unneeded_time: str
    max_node_provision_time: str


@dataclass(frozen=True)
class GpuConfig:
    time_slicing_replicas: int
    """Pods that share one physical GPU (1 = time-slicing off)."""


ALERT_RECEIVER_TYPES: Final = ("webhook", "slack", "pagerduty")
NO_RECEIVER: Final = "nowhere"
"""The receiver without integrations that undelivered alerts end in (reserved: not a receiver
name)."""
ALERT_CLASSES: Final = ("page", "ticket")
"""What a receiver is sent: `page` (critical alerts: someone acts now) and/or `ticket` (warnings:
someone looks within the day)."""


@dataclass(frozen=True)
class AlertReceiver:
    """One place alerts are delivered to (`alertReceivers` in the stack file)."""

    name: str
    type: str
    """One of ALERT_RECEIVER_TYPES."""
    alerts: tuple[str, ...]
    """Subset of ALERT_CLASSES, in that order."""
    url: str | None = None
    """webhook: the endpoint (not secret: put the credential in bearerToken)."""
    channel: str | None = None
    """slack: overrides the incoming webhook's default channel."""
    secret: str | None = field(default=None, repr=False)
    """The credential: slack webhookUrl, pagerduty routingKey, webhook bearerToken (optional)."""


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_retention: str
    prometheus_volume_gib: int
    scrape_interval: str
    alert_receivers: tuple[AlertReceiver, ...] = ()
    """Empty: Alertmanager runs, but alerts reach nobody (the preview warns)."""
    grafana: bool = True
    """Deploy Grafana with the Prometheus data source and the dashboard provisioned."""


@dataclass(frozen=True)
class ModelConfig:
    id: str
    revision: str | None
    """A pinned Hub commit, or None: the build takes the current head; the image digest pins it."""
    embedding_dimension: int
    dtype: str
    normalize: str = "true"
    """true/false force the server's L2 normalisation (EMBED_NORMALIZE); model follows the model's
    modules.json (the server's own default)."""


@dataclass(frozen=True)
class SecretStrings:
    """Secret config values: readable by the program, masked in every repr, log and error."""

    values: tuple[str, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"SecretStrings(<{len(self.values)} secret values>)"

    def __len__(self) -> int:
        return len(self.values)

    def as_output(self) -> Any:
        """The values as a Pulumi secret Output[list[str]] (encrypted in state and previews)."""
        import pulumi

        return pulumi.Output.secret(list(self.values))


@dataclass(frozen=True)
class InferenceConfig:
    namespace: str
    image: str | None
    """A prebuilt image pinned by digest; None builds ./Dockerfile into ECR."""
    hpa_min_replicas: int
    hpa_max_replicas: int
    hpa_target_in_flight: int
    """Target in-flight requests per pod (the primary HPA signal)."""
    hpa_target_gpu_utilization: int
    """Target GPU utilisation in percent (secondary HPA signal)."""
    max_batch_tokens: int
    max_batch_size: int
    max_queue_items: int
    max_queue_ms: int
    """The server's admission target (EMBED_MAX_QUEUE_SECONDS), in milliseconds."""
    cpu_request: str
    memory_request: str
    internet_facing: bool
    client_cidrs: tuple[str, ...]
    """CIDRs admitted to the load balancer; empty: the VPC CIDR only."""
    allow_world_clients: bool
    """0.0.0.0/0 may be in client_cidrs (only with internet_facing)."""
    api_keys: SecretStrings
    tls_certificate_arn: str | None
    """ACM certificate the NLB terminates TLS with; None: plain HTTP (internal or non-prod)."""
    endpoint_hostname: str | None
    """The DNS name clients use (one the certificate covers); None: the NLB's own AWS hostname."""
    route53_zone_id: str | None
    """Hosted zone in which the program points `endpoint_hostname` at the NLB; None: the operator
    creates that record."""


WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names of `servingHours` windows, Monday first (Python's weekday numbers)."""
MINUTES_PER_DAY: Final = 24 * 60


@dataclass(frozen=True)
class ServingWindow:
    """One `servingHours` window: from `start` on each of `days` until `end` (the next day when
    `end` is not after `start`)."""

    days: tuple[int, ...]
    """Weekday numbers, 0 = Monday, in order."""
    start: int
    """Minute of the day the window opens."""
    end: int
    """Minute of the day it closes; 1440 is midnight at the end of the day."""

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def intervals(self) -> list[tuple[int, int]]:
        """The window's [open, close) minutes of the week (a close past the week's end wraps)."""
        length = (self.end - self.start) % MINUTES_PER_DAY or MINUTES_PER_DAY
        return [
            (day * MINUTES_PER_DAY + self.start, day * MINUTES_PER_DAY + self.start + length)
            for day in self.days
        ]


@dataclass(frozen=True)
class ServingHours:
    """When the inference Deployment runs; outside every window it is scaled to zero."""

    timezone: str
    """IANA name, the CronJobs' `spec.timeZone`."""
    windows: tuple[ServingWindow, ...]


@dataclass(frozen=True)
class CapacityConfig:
    """Capacity kept ready ahead of load, and when none is kept at all."""

    gpu_headroom: int
    """Placeholder pods (each one inference pod's requests) holding warm GPU capacity."""
    serving_hours: ServingHours | None
    """None: the Deployment runs around the clock."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    stack_file: str
    region: str
    partition: str
    production: bool
    network: NetworkConfig
    cluster: ClusterConfig
    node_groups: NodeGroupsConfig
    autoscaler: AutoscalerConfig
    gpu: GpuConfig
    monitoring: MonitoringConfig
    model: ModelConfig
    inference: InferenceConfig
    capacity: CapacityConfig


# --- Parsing --------------------------------------------------------------------------------------

_D = TypeVar("_D")


def _filled(cls: type[_D], values: StackKeys, section: str, **computed: Any) -> _D:
    """A section's dataclass: each field holds the value of the key that fills it (infra/keys.py
    `fills`), except the fields the parse step computes."""
    prefix = f"{section}." if section else ""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    given = {}
    for spec in keys.specs().values():
        field_name = spec.fills.removeprefix(prefix)
        if spec.fills.startswith(prefix) and "." not in field_name and field_name not in computed:
            if field_name not in names:
                raise TypeError(
                    f"infra/keys.py: {spec.name} fills {spec.fills}, which {cls.__name__} lacks"
                )
            given[field_name] = getattr(values, spec.name)
    return cls(**given, **computed)


def parse(
    values: Mapping[str, str], stack: str, secret_keys: frozenset[str] = frozenset()
) -> StackConfig:
    """Parses and validates the raw config (full keys like `gpu-inference:vpcCidr`, values as the
    CLI passes them: strings, JSON for lists and objects): every key alone (infra/keys.py), then
    what involves several keys."""
    error = Errors(f"Pulumi.{stack}.yaml", secret_keys)
    region = values.get("aws:region")
    if not region:
        raise error("aws:region", None, "required; an AWS region, e.g. us-west-2")
    if region not in REGIONS:
        raise error("aws:region", region, f"one of {', '.join(sorted(REGIONS))}")
    k = keys.read(values, error)
    network = _network(k, error, region)
    cluster = _cluster(k, error, stack)
    node_groups = _node_groups(k, error, cluster.kubernetes_version)
    gpu = _filled(GpuConfig, k, "gpu")
    inference = _inference(k, error, network, node_groups, gpu)
    _check_tls(error, inference, region, k.production)
    _check_endpoint(error, inference, k.production)
    capacity = _filled(CapacityConfig, k, "capacity", serving_hours=_serving_hours(k, error))
    _check_headroom(error, capacity.gpu_headroom, node_groups, gpu, inference)
    return _filled(
        StackConfig,
        k,
        "",
        project=PROJECT,
        stack=stack,
        stack_file=error.stack_file,
        region=region,
        partition=partition(region),
        network=network,
        cluster=cluster,
        node_groups=node_groups,
        autoscaler=_filled(AutoscalerConfig, k, "autoscaler"),
        gpu=gpu,
        monitoring=_filled(MonitoringConfig, k, "monitoring", alert_receivers=_receivers(k, error)),
        model=_filled(ModelConfig, k, "model"),
        inference=inference,
        capacity=capacity,
    )


def load() -> StackConfig:
    """Reads the running stack's config through Pulumi (what `infra/__main__.py` calls)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    stack = pulumi.get_stack()
    raw = dict(runtime_config.CONFIG.get())
    secret = frozenset(k for k in raw if runtime_config.is_config_secret(k))
    return parse(raw, stack, secret)


def partition(region: str) -> str:
    """The AWS partition of a region (its ARNs start arn:<partition>:)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _network(k: StackKeys, error: Errors, region: str) -> NetworkConfig:
    zones = k.availabilityZones
    if not 2 <= len(zones) <= 6 or len(set(zones)) != len(zones):
        raise error("availabilityZones", list(zones), "2 to 6 distinct zones (EKS needs two)")
    zone_pattern = re.compile(rf"^{re.escape(region)}[a-z]$")
    for zone in zones:
        if not zone_pattern.match(zone):
            raise error("availabilityZones", zone, f"zones of {region}, e.g. {region}a")

    vpc = ipaddress.IPv4Network(k.vpcCidr)
    for name in ("privateSubnetPrefixLength", "publicSubnetPrefixLength"):
        length = getattr(k, name)
        if length <= vpc.prefixlen:
            raise error(name, length, f"an integer from {vpc.prefixlen + 1} to 28")
    private_len, public_len = k.privateSubnetPrefixLength, k.publicSubnetPrefixLength
    subnets = _allocate(vpc, [private_len] * len(zones) + [public_len] * len(zones))
    if subnets is None:
        raise error(
            "privateSubnetPrefixLength",
            private_len,
            f"{len(zones)} private /{private_len} and {len(zones)} public /{public_len} subnets "
            f"must fit in vpcCidr {vpc}: use longer prefixes or a larger VPC",
        )

    existing = None
    if k.existingVpcId is not None:
        if len(k.existingPrivateSubnetIds) < 2:
            raise error(
                "existingPrivateSubnetIds",
                list(k.existingPrivateSubnetIds),
                "at least two private subnets in different AZs when existingVpcId is set",
            )
        existing = _filled(ExistingNetwork, k, "network.existing")

    n = len(zones)
    return _filled(
        NetworkConfig,
        k,
        "network",
        private_subnet_cidrs=tuple(str(s) for s in subnets[:n]),
        public_subnet_cidrs=tuple(str(s) for s in subnets[n:]),
        nat_per_az=k.natGateways == "perAz",
        existing=existing,
    )


def _allocate(
    vpc: ipaddress.IPv4Network, prefixes: list[int]
) -> list[ipaddress.IPv4Network] | None:
    """Packs subnets of the given prefix lengths into the VPC in order, each aligned to its size."""
    cursor = int(vpc.network_address)
    end = int(vpc.broadcast_address) + 1
    result = []
    for prefix in prefixes:
        size = 1 << (32 - prefix)
        start = -(-cursor // size) * size
        if start + size > end:
            return None
        result.append(ipaddress.IPv4Network((start, prefix)))
        cursor = start + size
    return result


def _cluster(k: StackKeys, error: Errors, stack: str) -> ClusterConfig:
    # The default name holds the stack name, which Pulumi allows characters EKS does not.
    name = k.clusterName or f"{PROJECT}-{stack}"
    if not re.match(keys.CLUSTER_NAME, name):
        raise error("clusterName", name, keys.specs()["clusterName"].allowed)
    public, cidrs = k.endpointPublicAccess, k.publicAccessCidrs
    if public and not cidrs:
        raise error(
            "publicAccessCidrs",
            [],
            "the CIDRs allowed to reach the public API endpoint (your office or VPN egress) when "
            "endpointPublicAccess is true; nothing is open to the world by default",
        )
    world = any(ipaddress.ip_network(c) == _WORLD for c in cidrs)
    if world and k.production and not k.allowWorldApiAccess:
        raise error(
            "publicAccessCidrs",
            list(cidrs),
            "no 0.0.0.0/0 in a production stack unless allowWorldApiAccess is true",
        )
    _check_ci_roles(k, error)
    return _filled(
        ClusterConfig,
        k,
        "cluster",
        name=name,
        kubernetes_version=versions.KUBERNETES_VERSION,
        public_access_cidrs=cidrs if public else (),
    )


def iam_principal(arn: str) -> tuple[str, str, str] | None:
    """(account, role|user, name) of an IAM role/user ARN or an assumed-role session ARN. Paths are
    dropped: a session ARN has none, and a name is unique in its account whatever the path."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] not in ("iam", "sts"):
        return None
    account, resource = parts[4], parts[5].split("/")
    if resource[0] == "assumed-role" and len(resource) >= 2:
        return account, "role", resource[1]
    if resource[0] in ("role", "user") and len(resource) >= 2:
        return account, resource[0], resource[-1]
    return None


def _check_ci_roles(k: StackKeys, error: Errors) -> None:
    """deployRoleArn and previewRoleArn: different from each other and from every
    adminPrincipalArns entry (EKS refuses a second access entry for one principal)."""
    deploy, preview = k.deployRoleArn, k.previewRoleArn
    admins = {iam_principal(a) for a in k.adminPrincipalArns}
    for name, arn in (("deployRoleArn", deploy), ("previewRoleArn", preview)):
        # One principal, whatever the ARN's path: EKS would refuse its second access entry.
        if arn is not None and iam_principal(arn) in admins:
            raise error(name, arn, "a role not also listed in adminPrincipalArns")
    if (
        deploy is not None
        and preview is not None
        and iam_principal(deploy) == iam_principal(preview)
    ):
        raise error("previewRoleArn", preview, "a read-only role other than deployRoleArn")


def _node_groups(k: StackKeys, error: Errors, kubernetes_version: str) -> NodeGroupsConfig:
    system_raw = k.systemNodeGroup
    if not isinstance(system_raw, dict):
        raise error("systemNodeGroup", system_raw, "an object with instanceTypes and sizes")
    system = _node_group(error, "systemNodeGroup", {"name": "system", **system_raw}, gpu=False)
    if system.min_size < 1:
        raise error("systemNodeGroup", system_raw, "minSize >= 1: add-ons always need a node")

    groups_raw = k.gpuNodeGroups
    if not isinstance(groups_raw, list) or not groups_raw:
        raise error("gpuNodeGroups", groups_raw, "a non-empty list of GPU node group objects")
    groups = tuple(_node_group(error, "gpuNodeGroups", g, gpu=True) for g in groups_raw)
    names = [g.name for g in groups]
    if len(set(names)) != len(names) or "system" in names:
        raise error("gpuNodeGroups", names, "unique group names other than 'system'")
    if not any(g.is_spot for g in groups):
        raise error("gpuNodeGroups", names, "at least one SPOT group (on-demand is the fallback)")
    return _filled(
        NodeGroupsConfig,
        k,
        "node_groups",
        system=system,
        gpu=groups,
        ami_release_version=_ami_release(k, error, kubernetes_version)
        or versions.AMI_RELEASE_VERSION,
    )


def _ami_release(k: StackKeys, error: Errors, kubernetes_version: str) -> str | None:
    """amiReleaseVersion, when it is a release of the cluster's minor. Every node group is created
    at the cluster's Kubernetes version (infra/nodegroups.py), and an AMI release is built for one
    Kubernetes version (`<k8s patch>-<date>`; EKS CreateNodegroup `releaseVersion`: "the latest
    available AMI version for the node group's current Kubernetes version" by default): a release
    of another minor would fail when EKS creates or updates the group, 20 minutes into
    `pulumi up`."""
    release = k.amiReleaseVersion
    if release is not None and not release.startswith(f"{kubernetes_version}."):
        raise error(
            "amiReleaseVersion",
            release,
            f"an EKS AMI release of Kubernetes {kubernetes_version} (the cluster's minor, pinned "
            f"in infra/versions.py), like {keys.AMI_RELEASE_EXAMPLE}",
        )
    return release


_GROUP_KEYS: Final = frozenset(
    {"name", "capacityType", "instanceTypes", "minSize", "desiredSize", "maxSize", "diskGiB"}
)


def _node_group(error: Errors, key: str, raw: Any, gpu: bool) -> NodeGroupConfig:
    if not isinstance(raw, dict):
        raise error(key, raw, "objects with name, capacityType, instanceTypes and sizes")
    unknown = sorted(set(raw) - _GROUP_KEYS)
    if unknown:
        raise error(key, unknown, f"only the fields {', '.join(sorted(_GROUP_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 40:
        raise error(f"{key}.name", name, "a lowercase DNS label of at most 40 characters")
    where = f"{key}[{name}]"
    capacity = raw.get("capacityType", "ON_DEMAND" if not gpu else None)
    if capacity not in CAPACITY_TYPES:
        raise error(f"{where}.capacityType", capacity, f"one of {', '.join(CAPACITY_TYPES)}")
    types = raw.get("instanceTypes")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise error(f"{where}.instanceTypes", types, "a non-empty list of EC2 instance types")
    sizes = {}
    for field_name in ("minSize", "desiredSize", "maxSize"):
        value = raw.get(field_name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise error(f"{where}.{field_name}", value, "an integer from 0 to 1000")
        sizes[field_name] = value
    if not sizes["minSize"] <= sizes["desiredSize"] <= sizes["maxSize"] or sizes["maxSize"] < 1:
        raise error(where, sizes, "minSize <= desiredSize <= maxSize and maxSize >= 1")
    disk = raw.get("diskGiB", 150 if gpu else 50)
    if not isinstance(disk, int) or isinstance(disk, bool) or not 20 <= disk <= 2000:
        raise error(f"{where}.diskGiB", disk, "an integer from 20 to 2000")

    shape = None
    if gpu:
        unknown_types = [t for t in types if t not in GPU_INSTANCE_TYPES]
        if unknown_types:
            raise error(
                f"{where}.instanceTypes",
                unknown_types[0],
                f"a GPU instance type known to infra/config.py: {', '.join(GPU_INSTANCE_TYPES)}",
            )
        shapes = {GPU_INSTANCE_TYPES[t].shape for t in types}
        if len(shapes) != 1:
            raise error(
                f"{where}.instanceTypes",
                types,
                "instance types of one GPU shape (same GPU count, vCPUs and memory), so the "
                "autoscaler's node template is right for every type; put other shapes in "
                "another group",
            )
        shape = GPU_INSTANCE_TYPES[types[0]]
        if disk < 100:
            raise error(f"{where}.diskGiB", disk, "at least 100 GiB: CUDA images are many GB")
    else:
        for t in types:
            if not _INSTANCE_TYPE.match(t) or t in GPU_INSTANCE_TYPES:
                raise error(f"{where}.instanceTypes", t, "general-purpose (non-GPU) instance types")
    return NodeGroupConfig(
        name=name,
        capacity_type=capacity,
        instance_types=tuple(types),
        min_size=sizes["minSize"],
        desired_size=sizes["desiredSize"],
        max_size=sizes["maxSize"],
        disk_gib=disk,
        gpu=shape,
    )


def _cpu(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _gib(value: str) -> float:
    return int(value[:-2]) / (1024 if value.endswith("Mi") else 1)


def _gpu_pod_capacity(node_groups: NodeGroupsConfig, gpu: GpuConfig) -> int:
    """GPU-requesting pods the GPU groups hold at maxSize."""
    capacity = sum(g.max_size * (g.gpu.gpus if g.gpu else 0) for g in node_groups.gpu)
    return capacity * gpu.time_slicing_replicas


def _inference(
    k: StackKeys,
    error: Errors,
    network: NetworkConfig,
    node_groups: NodeGroupsConfig,
    gpu: GpuConfig,
) -> InferenceConfig:
    hpa_min, hpa_max = k.hpaMinReplicas, k.hpaMaxReplicas
    if hpa_max < hpa_min:
        raise error("hpaMaxReplicas", hpa_max, f">= hpaMinReplicas ({hpa_min})")
    capacity = _gpu_pod_capacity(node_groups, gpu)
    if hpa_max > capacity:
        raise error(
            "hpaMaxReplicas",
            hpa_max,
            f"at most {capacity}: the GPU node groups' maxSize x GPUs per node x "
            "timeSlicingReplicas; "
            "more replicas could never be scheduled",
        )
    if k.maxQueueItems < k.maxBatchSize:
        raise error("maxQueueItems", k.maxQueueItems, f">= maxBatchSize ({k.maxBatchSize})")

    cpu, memory = k.podCpuRequest, k.podMemoryRequest
    for group in node_groups.gpu:
        assert group.gpu is not None
        free_cpu = group.gpu.vcpus - NODE_OVERHEAD_CPU
        free_mem = group.gpu.memory_gib - NODE_OVERHEAD_MEMORY_GIB
        if _cpu(cpu) > free_cpu:
            raise error(
                "podCpuRequest",
                cpu,
                f"at most {free_cpu:g} to fit a {group.instance_types[0]} node",
            )
        if _gib(memory) > free_mem:
            raise error(
                "podMemoryRequest",
                memory,
                f"at most {free_mem:g}Gi to fit a {group.instance_types[0]} node",
            )

    clients = k.clientCidrs
    if any(ipaddress.ip_network(c) == _WORLD for c in clients) and not (
        k.internetFacing and k.allowWorldClients
    ):
        raise error(
            "clientCidrs",
            list(clients),
            "0.0.0.0/0 only when internetFacing and allowWorldClients are both true",
        )
    api_keys = _api_keys(k, error)
    if k.internetFacing and not api_keys:
        raise error(
            "apiKeys",
            [],
            "at least one key when internetFacing is true "
            "(pulumi config set --secret --path 'apiKeys[0]' <key>)",
        )
    return _filled(
        InferenceConfig,
        k,
        "inference",
        client_cidrs=clients or (network.vpc_cidr,),
        api_keys=api_keys,
    )


def _check_endpoint(error: Errors, inference: InferenceConfig, production: bool) -> None:
    if inference.route53_zone_id is not None and inference.endpoint_hostname is None:
        raise error(
            "route53ZoneId",
            inference.route53_zone_id,
            "set only together with endpointHostname: the zone gets a record for that name",
        )
    if (
        inference.tls_certificate_arn is not None
        and inference.internet_facing
        and production
        and inference.endpoint_hostname is None
    ):
        raise error(
            "endpointHostname",
            None,
            "a DNS name the tlsCertificateArn certificate covers when a production stack is "
            "internetFacing with TLS: the NLB's own AWS hostname is not on the certificate, so "
            "https clients would fail name verification",
        )


def _check_tls(error: Errors, inference: InferenceConfig, region: str, production: bool) -> None:
    arn = inference.tls_certificate_arn
    if arn is None:
        if inference.internet_facing and production:
            raise error(
                "tlsCertificateArn",
                None,
                "an ACM certificate ARN when a production stack is internetFacing: API keys must "
                "not cross the internet in clear text",
            )
        return
    # An NLB listener can only use an ACM certificate of its own region and partition.
    match = _ACM_CERTIFICATE.match(arn)
    assert match is not None  # the reader checked the format
    expected = partition(region)
    if match["partition"] != expected or match["region"] != region:
        raise error(
            "tlsCertificateArn",
            arn,
            f"a certificate of the stack's region: arn:{expected}:acm:{region}:<account>:"
            "certificate/<id> (an NLB uses ACM certificates of its own region only)",
        )


def _api_keys(k: StackKeys, error: Errors) -> SecretStrings:
    if k.apiKeys and error.full("apiKeys") not in error.secret_keys:
        raise error("apiKeys", "[redacted]", "a secret: set it with pulumi config set --secret")
    return SecretStrings(k.apiKeys)


_RECEIVER_FIELDS: Final = {
    "webhook": {"url": True, "bearerToken": False},
    "slack": {"webhookUrl": True, "channel": False},
    "pagerduty": {"routingKey": True},
}
"""Per receiver type: its own fields, True when required (besides name, type and alerts)."""
_SECRET_FIELDS: Final = frozenset({"bearerToken", "webhookUrl", "routingKey"})
_HTTP_URL = re.compile(r"^https?://[^\s/@]+(:[0-9]+)?(/[^\s]*)?$")
_SLACK_CHANNEL = re.compile(r"^[#@][^\s]{1,80}$")
_TOKEN = re.compile(r"^[^\s]{8,256}$")


def _receivers(k: StackKeys, error: Errors) -> tuple[AlertReceiver, ...]:
    raw = k.alertReceivers
    key = "alertReceivers"
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list):
        raise error(key, "[value]", "a list of receiver objects (name, type, alerts, ...)")
    receivers = tuple(_alert_receiver(error, i, item) for i, item in enumerate(raw))
    names = [rc.name for rc in receivers]
    if len(set(names)) != len(names):
        raise error(key, names, "unique receiver names")
    secret_fields = [
        f"{key}[{i}].{f}" for i, item in enumerate(raw) for f in sorted(_SECRET_FIELDS & set(item))
    ]
    if secret_fields and error.full(key) not in error.secret_keys:
        raise error(
            secret_fields[0],
            "[redacted]",
            f"a secret: pulumi config set --secret --path '{secret_fields[0]}' <value> "
            "(credentials are never stored or shown in plain text)",
        )
    return receivers


def _alert_receiver(error: Errors, index: int, raw: Any) -> AlertReceiver:
    where = f"alertReceivers[{index}]"
    if not isinstance(raw, dict):
        raise error(where, "[value]", "an object with name, type and alerts")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 40 or name == NO_RECEIVER:
        raise error(
            f"{where}.name",
            name,
            f"a lowercase DNS label of at most 40 characters, other than {NO_RECEIVER!r}",
        )
    kind = raw.get("type")
    if kind not in ALERT_RECEIVER_TYPES:
        raise error(f"{where}.type", kind, f"one of {', '.join(ALERT_RECEIVER_TYPES)}")
    fields = _RECEIVER_FIELDS[kind]
    unknown = sorted(set(raw) - {"name", "type", "alerts"} - set(fields))
    if unknown:
        allowed = ", ".join(["name", "type", "alerts", *fields])
        raise error(f"{where}.{unknown[0]}", "[value]", f"only the {kind} fields {allowed}")
    for field_name, required in fields.items():
        if required and raw.get(field_name) in (None, ""):
            shown = None if field_name in _SECRET_FIELDS else raw.get(field_name)
            raise error(f"{where}.{field_name}", shown, f"required for a {kind} receiver")
    alerts = raw.get("alerts", list(ALERT_CLASSES))
    if (
        not isinstance(alerts, list)
        or not alerts
        or not set(alerts) <= set(ALERT_CLASSES)
        or len(set(alerts)) != len(alerts)
    ):
        raise error(
            f"{where}.alerts",
            alerts,
            "a non-empty list of page (critical alerts) and/or ticket (warnings)",
        )
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not _HTTP_URL.match(url)):
        raise error(f"{where}.url", url, "an http(s) URL without credentials in it")
    channel = raw.get("channel")
    if channel is not None and (not isinstance(channel, str) or not _SLACK_CHANNEL.match(channel)):
        raise error(f"{where}.channel", channel, "a Slack channel (#name) or user (@name)")
    secret_field = next((f for f in fields if f in _SECRET_FIELDS and f in raw), None)
    secret = raw.get(secret_field) if secret_field else None
    if secret_field is not None:
        valid = isinstance(secret, str) and (
            _HTTP_URL.match(secret) if secret_field == "webhookUrl" else _TOKEN.match(secret)
        )
        if not valid:
            allowed = (
                "the Slack incoming webhook URL (https://hooks.slack.com/services/...)"
                if secret_field == "webhookUrl"
                else "a token of 8 to 256 characters without spaces"
            )
            raise error(f"{where}.{secret_field}", "[secret]", allowed)
    return AlertReceiver(
        name=name,
        type=kind,
        alerts=tuple(c for c in ALERT_CLASSES if c in alerts),
        url=url,
        channel=channel,
        secret=secret,
    )


def _check_headroom(
    error: Errors,
    headroom: int,
    node_groups: NodeGroupsConfig,
    gpu: GpuConfig,
    inference: InferenceConfig,
) -> None:
    capacity = _gpu_pod_capacity(node_groups, gpu)
    if headroom + inference.hpa_min_replicas > capacity:
        raise error(
            "gpuHeadroom",
            headroom,
            f"at most {capacity - inference.hpa_min_replicas}: with hpaMinReplicas "
            f"({inference.hpa_min_replicas}) it must fit the GPU node groups' maxSize x GPUs per "
            "node x timeSlicingReplicas, or placeholders would stay pending for good",
        )


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
_DAY_RANGE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$")


def _serving_hours(k: StackKeys, error: Errors) -> ServingHours | None:
    key = "servingHours"
    raw = k.servingHours
    if raw == {}:
        return None
    if not isinstance(raw, dict) or set(raw) != {"timezone", "windows"}:
        raise error(key, raw, keys.specs()[key].allowed)
    timezone = raw["timezone"]
    if not _is_iana_zone(timezone):
        raise error(
            f"{key}.timezone",
            timezone,
            "an IANA time zone name like Europe/Berlin or America/Los_Angeles (what a CronJob's "
            "spec.timeZone takes; not an offset, an abbreviation or Local)",
        )
    windows = raw["windows"]
    if not isinstance(windows, list) or not windows:
        raise error(f"{key}.windows", windows, "a non-empty list of {days, start, end} objects")
    parsed = tuple(_serving_window(error, f"{key}.windows[{i}]", w) for i, w in enumerate(windows))
    _check_not_always(error, f"{key}.windows", parsed)
    return ServingHours(timezone=timezone, windows=parsed)


def _is_iana_zone(name: object) -> bool:
    import zoneinfo

    if not isinstance(name, str) or name in ("", "Local") or name.startswith(("/", ".")):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _serving_window(error: Errors, where: str, raw: Any) -> ServingWindow:
    if not isinstance(raw, dict) or set(raw) != {"days", "start", "end"}:
        raise error(where, raw, 'an object with days (like ["mon-fri"]), start and end ("HH:MM")')
    days: set[int] = set()
    listed = raw["days"]
    if not isinstance(listed, list) or not listed:
        raise error(f"{where}.days", listed, "a non-empty list of days or ranges like mon-fri")
    for item in listed:
        match = _DAY_RANGE.match(item) if isinstance(item, str) else None
        if match is None:
            raise error(
                f"{where}.days", item, f"a day ({', '.join(WEEKDAYS)}) or a range like mon-fri"
            )
        first, last = WEEKDAYS.index(match[1]), WEEKDAYS.index(match[3] or match[1])
        if last < first:
            raise error(f"{where}.days", item, "a range forward within the week, like mon-fri")
        days.update(range(first, last + 1))
    start, end = (_minutes(error, f"{where}.{edge}", raw[edge]) for edge in ("start", "end"))
    if start == MINUTES_PER_DAY:
        raise error(f"{where}.start", raw["start"], "a time of day from 00:00 to 23:59")
    if start == end:
        raise error(
            f"{where}.end",
            raw["end"],
            f"a time other than the start ({raw['start']}): for a whole day use 00:00 to 24:00",
        )
    return ServingWindow(days=tuple(sorted(days)), start=start, end=end)


def _minutes(error: Errors, where: str, value: Any) -> int:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise error(where, value, 'a 24-hour time of day "HH:MM" (00:00 to 24:00)')
    return MINUTES_PER_DAY if value == "24:00" else int(match[1]) * 60 + int(match[2])


def awake_spans(windows: tuple[ServingWindow, ...]) -> list[tuple[int, int]]:
    """The union of the windows as [open, close) minutes of the week, overlapping and touching
    windows merged (Monday 00:00 is minute 0; a span that runs past Sunday ends above a week)."""
    week = 7 * MINUTES_PER_DAY
    spans = sorted(span for window in windows for span in window.intervals())
    merged: list[list[int]] = []
    for opened, closed in spans:
        if merged and opened <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], closed)
        else:
            merged.append([opened, closed])
    # A span running past Sunday midnight joins one that opens on Monday morning.
    if len(merged) > 1 and merged[-1][1] >= week + merged[0][0]:
        merged[-1][1] = max(merged[-1][1], merged.pop(0)[1] + week)
    return [(opened, closed) for opened, closed in merged]


def _check_not_always(error: Errors, where: str, windows: tuple[ServingWindow, ...]) -> None:
    spans = awake_spans(windows)
    if len(spans) == 1 and spans[0][1] - spans[0][0] >= 7 * MINUTES_PER_DAY:
        raise error(
            where,
            "every minute of the week",
            "windows that leave some time outside them; to serve around the clock, unset "
            "servingHours",
        )
