"""Stack configuration, parsed once into frozen dataclasses, with every check in one place.

Types, defaults and descriptions live in `Pulumi.yaml` (the CLI fills defaults in before the program
runs), so this module only parses and validates. Components receive these dataclasses and never read
`pulumi.Config`. A bad value raises `ConfigError` naming the stack file, the key, the value and what
is allowed, before any resource is registered."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from infra import versions

PROJECT: Final = "gpu-inference"


class ConfigError(Exception):
    """A stack config value that the program refuses, with everything needed to fix it."""

    def __init__(self, stack_file: str, key: str, value: object, allowed: str) -> None:
        self.stack_file = stack_file
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{stack_file}: {key} = {value!r} is not allowed: {allowed}")


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

LOG_TYPES: Final = ("api", "audit", "authenticator", "controllerManager", "scheduler")
CAPACITY_TYPES: Final = ("SPOT", "ON_DEMAND")
DTYPES: Final = ("float16", "bfloat16", "float32")
NORMALIZE_MODES: Final = ("true", "false", "model")
NAT_MODES: Final = ("single", "perAz")
RESERVED_NAMESPACES: Final = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

# Kubelet, OS and the DaemonSets on every GPU node (aws-node, kube-proxy, pod identity agent, EBS
# CSI node, NVIDIA device plugin, DCGM exporter) take roughly this much; an inference pod gets the
# rest.
NODE_OVERHEAD_CPU: Final = 1.0
NODE_OVERHEAD_MEMORY_GIB: Final = 3.0

_WORLD: Final = ipaddress.ip_network("0.0.0.0/0")
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
_AUTOSCALER_DURATION = re.compile(r"^[1-9][0-9]*(s|m|h)$")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CLUSTER_NAME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]{0,99}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_IAM_PRINCIPAL = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(role|user)/[\w+=,.@/-]+$")
_IAM_ROLE = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]+$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_IMAGE_BY_DIGEST = re.compile(
    r"^[a-z0-9][\w.-]*(:[0-9]+)?(/[\w.-]+)+(:[\w.-]+)?@sha256:[0-9a-f]{64}$"
)
_CPU = re.compile(r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$")
_MEMORY = re.compile(r"^[0-9]+(Mi|Gi)$")
_AMI_RELEASE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+-[0-9]{8}$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_ACM_CERTIFICATE = re.compile(
    r"^arn:(?P<partition>aws|aws-cn|aws-us-gov):acm:(?P<region>[a-z0-9-]+):[0-9]{12}:"
    r"certificate/[A-Za-z0-9-]+$"
)
# RFC 1123 labels (letters lowercase), at least two of them, at most 253 characters in all; the last
# label must hold a letter so an IPv4 address is never taken for a name.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+"
    r"(?=[-a-z0-9]*[a-z])[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
)
# Route 53 hosted zone ids, as the console and `aws route53 list-hosted-zones` show them (without
# the "/hostedzone/" prefix).
_ROUTE53_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,32}$")


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
    endpoint_public_access: bool
    public_access_cidrs: tuple[str, ...]
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
    cpu_request: str
    memory_request: str
    internet_facing: bool
    client_cidrs: tuple[str, ...]
    """CIDRs admitted to the load balancer; empty: the VPC CIDR only."""
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


# --- Reading --------------------------------------------------------------------------------------


class _Reader:
    """Typed access to the raw config strings, every failure a ConfigError naming the stack file."""

    def __init__(self, values: Mapping[str, str], stack: str, secret_keys: frozenset[str]) -> None:
        self.values = values
        self.stack_file = f"Pulumi.{stack}.yaml"
        self.secret_keys = secret_keys

    @staticmethod
    def full(key: str) -> str:
        return key if ":" in key else f"{PROJECT}:{key}"

    def error(self, key: str, value: object, allowed: str) -> ConfigError:
        full = self.full(key)
        shown = "[secret]" if full in self.secret_keys else value
        return ConfigError(self.stack_file, full, shown, allowed)

    def raw(self, key: str) -> str | None:
        return self.values.get(self.full(key))

    def required(self, key: str, allowed: str) -> str:
        value = self.raw(key)
        if value is None or value == "":
            raise self.error(key, None, f"required; {allowed}")
        return value

    def string(self, key: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.required(key, allowed)
        if not pattern.match(value):
            raise self.error(key, value, allowed)
        return value

    def optional(self, key: str, pattern: re.Pattern[str], allowed: str) -> str | None:
        value = self.raw(key)
        if value is None or value == "":
            return None
        if not pattern.match(value):
            raise self.error(key, value, allowed)
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.required(key, f"one of {', '.join(choices)}")
        if value not in choices:
            raise self.error(key, value, f"one of {', '.join(choices)}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.required(key, "true or false")
        if value not in ("true", "false", "True", "False"):
            raise self.error(key, value, "true or false")
        return value.lower() == "true"

    def integer(self, key: str, low: int, high: int) -> int:
        allowed = f"an integer from {low} to {high}"
        value = self.required(key, allowed)
        try:
            number = int(value)
        except ValueError:
            raise self.error(key, value, allowed) from None
        if not low <= number <= high:
            raise self.error(key, number, allowed)
        return number

    def json(self, key: str, allowed: str) -> Any:
        value = self.raw(key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise self.error(key, value, allowed) from None

    def strings(self, key: str) -> tuple[str, ...]:
        allowed = "a list of strings"
        value = self.json(key, allowed)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, value, allowed)
        return tuple(value)

    def cidrs(self, key: str) -> tuple[str, ...]:
        result = []
        for value in self.strings(key):
            try:
                result.append(str(ipaddress.ip_network(value, strict=True)))
            except ValueError:
                raise self.error(
                    key, value, "IPv4 CIDRs like 203.0.113.0/24 (host bits zero)"
                ) from None
        return tuple(result)


# --- Parsing --------------------------------------------------------------------------------------


def parse(
    values: Mapping[str, str], stack: str, secret_keys: frozenset[str] = frozenset()
) -> StackConfig:
    """Parses and validates the raw config (full keys like `gpu-inference:vpcCidr`, values as the
    CLI passes them: strings, JSON for lists and objects)."""
    r = _Reader(values, stack, secret_keys)
    region = r.required("aws:region", "an AWS region, e.g. us-west-2")
    if region not in REGIONS:
        raise r.error("aws:region", region, f"one of {', '.join(sorted(REGIONS))}")
    production = r.boolean("production")
    network = _network(r, region)
    cluster = _cluster(r, stack, production)
    node_groups = _node_groups(r)
    gpu = GpuConfig(time_slicing_replicas=r.integer("timeSlicingReplicas", 1, 16))
    inference = _inference(r, network, node_groups, gpu)
    _check_tls(r, inference, region, production)
    _check_endpoint(r, inference, production)
    return StackConfig(
        project=PROJECT,
        stack=stack,
        stack_file=r.stack_file,
        region=region,
        partition=_partition(region),
        production=production,
        network=network,
        cluster=cluster,
        node_groups=node_groups,
        autoscaler=AutoscalerConfig(
            scale_down_unneeded_time=r.string(
                "autoscalerScaleDownUnneededTime", _AUTOSCALER_DURATION, "a duration like 10m"
            ),
            max_node_provision_time=r.string(
                "autoscalerMaxNodeProvisionTime", _AUTOSCALER_DURATION, "a duration like 15m"
            ),
        ),
        gpu=gpu,
        monitoring=MonitoringConfig(
            prometheus_retention=r.string(
                "prometheusRetention", _DURATION, "a Prometheus duration like 15d"
            ),
            prometheus_volume_gib=r.integer("prometheusVolumeGiB", 10, 16384),
            scrape_interval=r.string(
                "prometheusScrapeInterval", _DURATION, "a Prometheus duration like 15s"
            ),
            alert_receivers=_alert_receivers(r),
            grafana=r.boolean("grafana"),
        ),
        model=_model(r),
        inference=inference,
        capacity=CapacityConfig(
            gpu_headroom=_gpu_headroom(r, node_groups, gpu, inference),
            serving_hours=_serving_hours(r),
        ),
    )


def load() -> StackConfig:
    """Reads the running stack's config through Pulumi (what `infra/__main__.py` calls)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    stack = pulumi.get_stack()
    raw = dict(runtime_config.CONFIG.get())
    secret = frozenset(k for k in raw if runtime_config.is_config_secret(k))
    return parse(raw, stack, secret)


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _network(r: _Reader, region: str) -> NetworkConfig:
    zones = r.strings("availabilityZones")
    zone_pattern = re.compile(rf"^{re.escape(region)}[a-z]$")
    if not 2 <= len(zones) <= 6 or len(set(zones)) != len(zones):
        raise r.error("availabilityZones", list(zones), "2 to 6 distinct zones (EKS needs two)")
    for zone in zones:
        if not zone_pattern.match(zone):
            raise r.error("availabilityZones", zone, f"zones of {region}, e.g. {region}a")

    vpc_text = r.required("vpcCidr", "a private IPv4 CIDR from /16 to /24")
    try:
        vpc = ipaddress.IPv4Network(vpc_text, strict=True)
    except ValueError:
        raise r.error("vpcCidr", vpc_text, "a private IPv4 CIDR from /16 to /24") from None
    if not (vpc.is_private and 16 <= vpc.prefixlen <= 24):
        raise r.error("vpcCidr", vpc_text, "a private (RFC 1918) IPv4 CIDR from /16 to /24")

    private_len = r.integer("privateSubnetPrefixLength", vpc.prefixlen + 1, 28)
    public_len = r.integer("publicSubnetPrefixLength", vpc.prefixlen + 1, 28)
    subnets = _allocate(vpc, [private_len] * len(zones) + [public_len] * len(zones))
    if subnets is None:
        raise r.error(
            "privateSubnetPrefixLength",
            private_len,
            f"{len(zones)} private /{private_len} and {len(zones)} public /{public_len} subnets "
            f"must fit in vpcCidr {vpc}: use longer prefixes or a larger VPC",
        )

    existing = None
    vpc_id = r.optional("existingVpcId", _VPC_ID, "a VPC id like vpc-0123456789abcdef0")
    if vpc_id is not None:
        private_ids = r.strings("existingPrivateSubnetIds")
        public_ids = r.strings("existingPublicSubnetIds")
        for key, ids in (
            ("existingPrivateSubnetIds", private_ids),
            ("existingPublicSubnetIds", public_ids),
        ):
            bad = [i for i in ids if not _SUBNET_ID.match(i)]
            if bad:
                raise r.error(key, bad[0], "subnet ids like subnet-0123456789abcdef0")
        if len(private_ids) < 2:
            raise r.error(
                "existingPrivateSubnetIds",
                list(private_ids),
                "at least two private subnets in different AZs when existingVpcId is set",
            )
        existing = ExistingNetwork(vpc_id, private_ids, public_ids)

    n = len(zones)
    return NetworkConfig(
        availability_zones=zones,
        vpc_cidr=str(vpc),
        private_subnet_cidrs=tuple(str(s) for s in subnets[:n]),
        public_subnet_cidrs=tuple(str(s) for s in subnets[n:]),
        nat_per_az=r.choice("natGateways", NAT_MODES) == "perAz",
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


def _cluster(r: _Reader, stack: str, production: bool) -> ClusterConfig:
    name = r.raw("clusterName") or f"{PROJECT}-{stack}"
    if not _CLUSTER_NAME.match(name):
        raise r.error(
            "clusterName", name, "letters, digits and '-', starting with a letter, at most 100"
        )
    version = r.required("kubernetesVersion", "a Kubernetes minor like 1.34")
    if version not in versions.SUPPORTED_KUBERNETES_VERSIONS:
        raise r.error(
            "kubernetesVersion",
            version,
            f"one of {', '.join(versions.SUPPORTED_KUBERNETES_VERSIONS)}",
        )
    public = r.boolean("endpointPublicAccess")
    cidrs = r.cidrs("publicAccessCidrs")
    if public and not cidrs:
        raise r.error(
            "publicAccessCidrs",
            [],
            "the CIDRs allowed to reach the public API endpoint (your office or VPN egress) when "
            "endpointPublicAccess is true; nothing is open to the world by default",
        )
    world = any(ipaddress.ip_network(c) == _WORLD for c in cidrs)
    if world and production and not r.boolean("allowWorldApiAccess"):
        raise r.error(
            "publicAccessCidrs",
            list(cidrs),
            "no 0.0.0.0/0 in a production stack unless allowWorldApiAccess is true",
        )
    admins = r.strings("adminPrincipalArns")
    for arn in admins:
        if not _IAM_PRINCIPAL.match(arn):
            raise r.error(
                "adminPrincipalArns", arn, "IAM role or user ARNs (arn:aws:iam::<account>:role/...)"
            )
    logs = r.strings("controlPlaneLogTypes")
    for log in logs:
        if log not in LOG_TYPES:
            raise r.error("controlPlaneLogTypes", log, f"a subset of {', '.join(LOG_TYPES)}")
    deploy, preview = _ci_roles(r, admins)
    return ClusterConfig(
        name=name,
        kubernetes_version=version,
        endpoint_public_access=public,
        public_access_cidrs=cidrs if public else (),
        private_api_access_cidrs=r.cidrs("privateApiAccessCidrs"),
        admin_principal_arns=admins,
        deploy_role_arn=deploy,
        preview_role_arn=preview,
        log_types=logs,
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


def _ci_roles(r: _Reader, admins: tuple[str, ...]) -> tuple[str | None, str | None]:
    """deployRoleArn and previewRoleArn: IAM roles, different from each other and from every
    adminPrincipalArns entry (EKS refuses a second access entry for one principal)."""
    allowed = "an IAM role ARN (arn:aws:iam::<account>:role/<name>) or unset"
    deploy = r.optional("deployRoleArn", _IAM_ROLE, allowed)
    preview = r.optional("previewRoleArn", _IAM_ROLE, allowed)
    for key, arn in (("deployRoleArn", deploy), ("previewRoleArn", preview)):
        # One principal, whatever the ARN's path: EKS would refuse its second access entry.
        if arn is not None and iam_principal(arn) in {iam_principal(a) for a in admins}:
            raise r.error(key, arn, "a role not also listed in adminPrincipalArns")
    if (
        deploy is not None
        and preview is not None
        and iam_principal(deploy) == iam_principal(preview)
    ):
        raise r.error("previewRoleArn", preview, "a read-only role other than deployRoleArn")
    return deploy, preview


def _node_groups(r: _Reader) -> NodeGroupsConfig:
    system_raw = r.json("systemNodeGroup", "an object")
    if not isinstance(system_raw, dict):
        raise r.error("systemNodeGroup", system_raw, "an object with instanceTypes and sizes")
    system = _node_group(r, "systemNodeGroup", {"name": "system", **system_raw}, gpu=False)
    if system.min_size < 1:
        raise r.error("systemNodeGroup", system_raw, "minSize >= 1: add-ons always need a node")

    groups_raw = r.json("gpuNodeGroups", "a list of objects")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise r.error("gpuNodeGroups", groups_raw, "a non-empty list of GPU node group objects")
    groups = tuple(_node_group(r, "gpuNodeGroups", g, gpu=True) for g in groups_raw)
    names = [g.name for g in groups]
    if len(set(names)) != len(names) or "system" in names:
        raise r.error("gpuNodeGroups", names, "unique group names other than 'system'")
    if not any(g.is_spot for g in groups):
        raise r.error("gpuNodeGroups", names, "at least one SPOT group (on-demand is the fallback)")
    return NodeGroupsConfig(
        system=system,
        gpu=groups,
        ami_release_version=r.optional(
            "amiReleaseVersion", _AMI_RELEASE, "an EKS AMI release like 1.34.2-20251112"
        )
        or versions.AMI_RELEASE_VERSION,
    )


_GROUP_KEYS: Final = frozenset(
    {"name", "capacityType", "instanceTypes", "minSize", "desiredSize", "maxSize", "diskGiB"}
)


def _node_group(r: _Reader, key: str, raw: Any, gpu: bool) -> NodeGroupConfig:
    if not isinstance(raw, dict):
        raise r.error(key, raw, "objects with name, capacityType, instanceTypes and sizes")
    unknown = sorted(set(raw) - _GROUP_KEYS)
    if unknown:
        raise r.error(key, unknown, f"only the fields {', '.join(sorted(_GROUP_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 40:
        raise r.error(f"{key}.name", name, "a lowercase DNS label of at most 40 characters")
    where = f"{key}[{name}]"
    capacity = raw.get("capacityType", "ON_DEMAND" if not gpu else None)
    if capacity not in CAPACITY_TYPES:
        raise r.error(f"{where}.capacityType", capacity, f"one of {', '.join(CAPACITY_TYPES)}")
    types = raw.get("instanceTypes")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise r.error(f"{where}.instanceTypes", types, "a non-empty list of EC2 instance types")
    sizes = {}
    for field_name in ("minSize", "desiredSize", "maxSize"):
        value = raw.get(field_name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise r.error(f"{where}.{field_name}", value, "an integer from 0 to 1000")
        sizes[field_name] = value
    if not sizes["minSize"] <= sizes["desiredSize"] <= sizes["maxSize"] or sizes["maxSize"] < 1:
        raise r.error(where, sizes, "minSize <= desiredSize <= maxSize and maxSize >= 1")
    disk = raw.get("diskGiB", 150 if gpu else 50)
    if not isinstance(disk, int) or isinstance(disk, bool) or not 20 <= disk <= 2000:
        raise r.error(f"{where}.diskGiB", disk, "an integer from 20 to 2000")

    shape = None
    if gpu:
        unknown_types = [t for t in types if t not in GPU_INSTANCE_TYPES]
        if unknown_types:
            raise r.error(
                f"{where}.instanceTypes",
                unknown_types[0],
                f"a GPU instance type known to infra/config.py: {', '.join(GPU_INSTANCE_TYPES)}",
            )
        shapes = {GPU_INSTANCE_TYPES[t].shape for t in types}
        if len(shapes) != 1:
            raise r.error(
                f"{where}.instanceTypes",
                types,
                "instance types of one GPU shape (same GPU count, vCPUs and memory), so the "
                "autoscaler's node template is right for every type; put other shapes in "
                "another group",
            )
        shape = GPU_INSTANCE_TYPES[types[0]]
        if disk < 100:
            raise r.error(f"{where}.diskGiB", disk, "at least 100 GiB: CUDA images are many GB")
    else:
        for t in types:
            if not _INSTANCE_TYPE.match(t) or t in GPU_INSTANCE_TYPES:
                raise r.error(
                    f"{where}.instanceTypes", t, "general-purpose (non-GPU) instance types"
                )
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


def _model(r: _Reader) -> ModelConfig:
    revision = r.raw("modelRevision") or None
    if revision is not None and not _COMMIT.match(revision):
        raise r.error(
            "modelRevision",
            revision,
            "a 40-character commit hash from the model's Hub history (branches and tags move)",
        )
    return ModelConfig(
        id=r.string("modelId", _MODEL_ID, "a Hugging Face model id like thenlper/gte-large-zh"),
        revision=revision,
        embedding_dimension=r.integer("embeddingDimension", 1, 8192),
        dtype=r.choice("dtype", DTYPES),
        normalize=r.choice("normalize", NORMALIZE_MODES),
    )


def _cpu(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _gib(value: str) -> float:
    return int(value[:-2]) / (1024 if value.endswith("Mi") else 1)


def _inference(
    r: _Reader, network: NetworkConfig, node_groups: NodeGroupsConfig, gpu: GpuConfig
) -> InferenceConfig:
    namespace = r.string("namespace", _NAME, "a lowercase DNS label")
    if namespace in RESERVED_NAMESPACES or len(namespace) > 63:
        raise r.error("namespace", namespace, "a dedicated namespace (not a system one)")
    image = r.optional(
        "image",
        _IMAGE_BY_DIGEST,
        "an image pinned by digest, like 123456789012.dkr.ecr.us-west-2.amazonaws.com/embed@sha256:"
        "<64 hex>; leave it unset to build ./Dockerfile into ECR",
    )
    hpa_min = r.integer("hpaMinReplicas", 1, 1000)
    hpa_max = r.integer("hpaMaxReplicas", 1, 1000)
    if hpa_max < hpa_min:
        raise r.error("hpaMaxReplicas", hpa_max, f">= hpaMinReplicas ({hpa_min})")
    capacity = sum(g.max_size * (g.gpu.gpus if g.gpu else 0) for g in node_groups.gpu)
    capacity *= gpu.time_slicing_replicas
    if hpa_max > capacity:
        raise r.error(
            "hpaMaxReplicas",
            hpa_max,
            f"at most {capacity}: the GPU node groups' maxSize x GPUs per node x "
            "timeSlicingReplicas; "
            "more replicas could never be scheduled",
        )
    max_batch_size = r.integer("maxBatchSize", 1, 4096)
    max_queue_items = r.integer("maxQueueItems", 1, 1_000_000)
    if max_queue_items < max_batch_size:
        raise r.error("maxQueueItems", max_queue_items, f">= maxBatchSize ({max_batch_size})")

    cpu = r.string("podCpuRequest", _CPU, "a Kubernetes CPU quantity like 2 or 1500m")
    memory = r.string("podMemoryRequest", _MEMORY, "a Kubernetes memory quantity like 8Gi")
    for group in node_groups.gpu:
        assert group.gpu is not None
        free_cpu = group.gpu.vcpus - NODE_OVERHEAD_CPU
        free_mem = group.gpu.memory_gib - NODE_OVERHEAD_MEMORY_GIB
        if _cpu(cpu) > free_cpu:
            raise r.error(
                "podCpuRequest",
                cpu,
                f"at most {free_cpu:g} to fit a {group.instance_types[0]} node",
            )
        if _gib(memory) > free_mem:
            raise r.error(
                "podMemoryRequest",
                memory,
                f"at most {free_mem:g}Gi to fit a {group.instance_types[0]} node",
            )

    internet_facing = r.boolean("internetFacing")
    clients = r.cidrs("clientCidrs")
    if any(ipaddress.ip_network(c) == _WORLD for c in clients) and not (
        internet_facing and r.boolean("allowWorldClients")
    ):
        raise r.error(
            "clientCidrs",
            list(clients),
            "0.0.0.0/0 only when internetFacing and allowWorldClients are both true",
        )
    keys = _api_keys(r)
    if internet_facing and not keys:
        raise r.error(
            "apiKeys",
            [],
            "at least one key when internetFacing is true "
            "(pulumi config set --secret --path 'apiKeys[0]' <key>)",
        )
    return InferenceConfig(
        namespace=namespace,
        image=image,
        hpa_min_replicas=hpa_min,
        hpa_max_replicas=hpa_max,
        hpa_target_in_flight=r.integer("hpaTargetInFlight", 1, 10_000),
        hpa_target_gpu_utilization=r.integer("hpaTargetGpuUtilization", 1, 100),
        max_batch_tokens=r.integer("maxBatchTokens", 512, 1_048_576),
        max_batch_size=max_batch_size,
        max_queue_items=max_queue_items,
        cpu_request=cpu,
        memory_request=memory,
        internet_facing=internet_facing,
        client_cidrs=clients or (network.vpc_cidr,),
        api_keys=keys,
        tls_certificate_arn=r.optional(
            "tlsCertificateArn",
            _ACM_CERTIFICATE,
            "an ACM certificate ARN like "
            "arn:aws:acm:<region>:<12-digit account>:certificate/<id>, or unset for plain HTTP",
        ),
        endpoint_hostname=r.optional(
            "endpointHostname",
            _HOSTNAME,
            "a lowercase fully qualified DNS name like embeddings.example.com (RFC 1123 labels, "
            "no scheme, port, path or trailing dot), or unset to use the NLB's hostname",
        ),
        route53_zone_id=r.optional(
            "route53ZoneId",
            _ROUTE53_ZONE_ID,
            "a Route 53 hosted zone id like Z0123456789ABCDEFGHIJ, or unset to create the DNS "
            "record yourself",
        ),
    )


def _check_endpoint(r: _Reader, inference: InferenceConfig, production: bool) -> None:
    if inference.route53_zone_id is not None and inference.endpoint_hostname is None:
        raise r.error(
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
        raise r.error(
            "endpointHostname",
            None,
            "a DNS name the tlsCertificateArn certificate covers when a production stack is "
            "internetFacing with TLS: the NLB's own AWS hostname is not on the certificate, so "
            "https clients would fail name verification",
        )


def _check_tls(r: _Reader, inference: InferenceConfig, region: str, production: bool) -> None:
    arn = inference.tls_certificate_arn
    if arn is None:
        if inference.internet_facing and production:
            raise r.error(
                "tlsCertificateArn",
                None,
                "an ACM certificate ARN when a production stack is internetFacing: API keys must "
                "not cross the internet in clear text",
            )
        return
    # An NLB listener can only use an ACM certificate of its own region and partition.
    match = _ACM_CERTIFICATE.match(arn)
    assert match is not None  # the reader checked the format
    partition = _partition(region)
    if match["partition"] != partition or match["region"] != region:
        raise r.error(
            "tlsCertificateArn",
            arn,
            f"a certificate of the stack's region: arn:{partition}:acm:{region}:<account>:"
            "certificate/<id> (an NLB uses ACM certificates of its own region only)",
        )


def _api_keys(r: _Reader) -> SecretStrings:
    allowed = "a list of secret strings of at least 16 characters (set with --secret)"
    value = r.json("apiKeys", allowed)
    if not value:
        return SecretStrings(())
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) >= 16 for v in value):
        raise r.error("apiKeys", "[secret]", allowed)
    if r.full("apiKeys") not in r.secret_keys:
        raise r.error("apiKeys", "[redacted]", "a secret: set it with pulumi config set --secret")
    return SecretStrings(tuple(value))


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


def _alert_receivers(r: _Reader) -> tuple[AlertReceiver, ...]:
    raw = r.json("alertReceivers", "a list of receiver objects")
    key = "alertReceivers"
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list):
        raise r.error(key, "[value]", "a list of receiver objects (name, type, alerts, ...)")
    receivers = tuple(_alert_receiver(r, i, item) for i, item in enumerate(raw))
    names = [rc.name for rc in receivers]
    if len(set(names)) != len(names):
        raise r.error(key, names, "unique receiver names")
    secret_fields = [
        f"{key}[{i}].{f}" for i, item in enumerate(raw) for f in sorted(_SECRET_FIELDS & set(item))
    ]
    if secret_fields and r.full(key) not in r.secret_keys:
        raise r.error(
            secret_fields[0],
            "[redacted]",
            f"a secret: pulumi config set --secret --path '{secret_fields[0]}' <value> "
            "(credentials are never stored or shown in plain text)",
        )
    return receivers


def _alert_receiver(r: _Reader, index: int, raw: Any) -> AlertReceiver:
    where = f"alertReceivers[{index}]"
    if not isinstance(raw, dict):
        raise r.error(where, "[value]", "an object with name, type and alerts")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 40 or name == NO_RECEIVER:
        raise r.error(
            f"{where}.name",
            name,
            f"a lowercase DNS label of at most 40 characters, other than {NO_RECEIVER!r}",
        )
    kind = raw.get("type")
    if kind not in ALERT_RECEIVER_TYPES:
        raise r.error(f"{where}.type", kind, f"one of {', '.join(ALERT_RECEIVER_TYPES)}")
    fields = _RECEIVER_FIELDS[kind]
    unknown = sorted(set(raw) - {"name", "type", "alerts"} - set(fields))
    if unknown:
        allowed = ", ".join(["name", "type", "alerts", *fields])
        raise r.error(f"{where}.{unknown[0]}", "[value]", f"only the {kind} fields {allowed}")
    for field_name, required in fields.items():
        if required and raw.get(field_name) in (None, ""):
            shown = None if field_name in _SECRET_FIELDS else raw.get(field_name)
            raise r.error(f"{where}.{field_name}", shown, f"required for a {kind} receiver")
    alerts = raw.get("alerts", list(ALERT_CLASSES))
    if (
        not isinstance(alerts, list)
        or not alerts
        or not set(alerts) <= set(ALERT_CLASSES)
        or len(set(alerts)) != len(alerts)
    ):
        raise r.error(
            f"{where}.alerts",
            alerts,
            "a non-empty list of page (critical alerts) and/or ticket (warnings)",
        )
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not _HTTP_URL.match(url)):
        raise r.error(f"{where}.url", url, "an http(s) URL without credentials in it")
    channel = raw.get("channel")
    if channel is not None and (not isinstance(channel, str) or not _SLACK_CHANNEL.match(channel)):
        raise r.error(f"{where}.channel", channel, "a Slack channel (#name) or user (@name)")
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
            raise r.error(f"{where}.{secret_field}", "[secret]", allowed)
    return AlertReceiver(
        name=name,
        type=kind,
        alerts=tuple(c for c in ALERT_CLASSES if c in alerts),
        url=url,
        channel=channel,
        secret=secret,
    )


def _gpu_headroom(
    r: _Reader, node_groups: NodeGroupsConfig, gpu: GpuConfig, inference: InferenceConfig
) -> int:
    headroom = r.integer("gpuHeadroom", 0, 64)
    capacity = sum(g.max_size * (g.gpu.gpus if g.gpu else 0) for g in node_groups.gpu)
    capacity *= gpu.time_slicing_replicas
    if headroom + inference.hpa_min_replicas > capacity:
        raise r.error(
            "gpuHeadroom",
            headroom,
            f"at most {capacity - inference.hpa_min_replicas}: with hpaMinReplicas "
            f"({inference.hpa_min_replicas}) it must fit the GPU node groups' maxSize x GPUs per "
            "node x timeSlicingReplicas, or placeholders would stay pending for good",
        )
    return headroom


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
_DAY_RANGE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$")
_SERVING_HOURS_SHAPE: Final = (
    'an object {"timezone": "<IANA name>", "windows": [{"days": ["mon-fri"], "start": "07:00", '
    '"end": "19:00"}]}, or unset to serve around the clock'
)


def _serving_hours(r: _Reader) -> ServingHours | None:
    key = "servingHours"
    raw = r.json("servingHours", _SERVING_HOURS_SHAPE)
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict) or set(raw) != {"timezone", "windows"}:
        raise r.error(key, raw, _SERVING_HOURS_SHAPE)
    timezone = raw["timezone"]
    if not _is_iana_zone(timezone):
        raise r.error(
            f"{key}.timezone",
            timezone,
            "an IANA time zone name like Europe/Berlin or America/Los_Angeles (what a CronJob's "
            "spec.timeZone takes; not an offset, an abbreviation or Local)",
        )
    windows = raw["windows"]
    if not isinstance(windows, list) or not windows:
        raise r.error(f"{key}.windows", windows, "a non-empty list of {days, start, end} objects")
    parsed = tuple(_serving_window(r, f"{key}.windows[{i}]", w) for i, w in enumerate(windows))
    _check_not_always(r, f"{key}.windows", parsed)
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


def _serving_window(r: _Reader, where: str, raw: Any) -> ServingWindow:
    if not isinstance(raw, dict) or set(raw) != {"days", "start", "end"}:
        raise r.error(where, raw, 'an object with days (like ["mon-fri"]), start and end ("HH:MM")')
    days: set[int] = set()
    listed = raw["days"]
    if not isinstance(listed, list) or not listed:
        raise r.error(f"{where}.days", listed, "a non-empty list of days or ranges like mon-fri")
    for item in listed:
        match = _DAY_RANGE.match(item) if isinstance(item, str) else None
        if match is None:
            raise r.error(
                f"{where}.days", item, f"a day ({', '.join(WEEKDAYS)}) or a range like mon-fri"
            )
        first, last = WEEKDAYS.index(match[1]), WEEKDAYS.index(match[3] or match[1])
        if last < first:
            raise r.error(f"{where}.days", item, "a range forward within the week, like mon-fri")
        days.update(range(first, last + 1))
    start, end = (_minutes(r, f"{where}.{edge}", raw[edge]) for edge in ("start", "end"))
    if start == MINUTES_PER_DAY:
        raise r.error(f"{where}.start", raw["start"], "a time of day from 00:00 to 23:59")
    if start == end:
        raise r.error(
            f"{where}.end",
            raw["end"],
            f"a time other than the start ({raw['start']}): for a whole day use 00:00 to 24:00",
        )
    return ServingWindow(days=tuple(sorted(days)), start=start, end=end)


def _minutes(r: _Reader, where: str, value: Any) -> int:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise r.error(where, value, 'a 24-hour time of day "HH:MM" (00:00 to 24:00)')
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


def _check_not_always(r: _Reader, where: str, windows: tuple[ServingWindow, ...]) -> None:
    spans = awake_spans(windows)
    if len(spans) == 1 and spans[0][1] - spans[0][0] >= 7 * MINUTES_PER_DAY:
        raise r.error(
            where,
            "every minute of the week",
            "windows that leave some time outside them; to serve around the clock, unset "
            "servingHours",
        )
