"""Every stack key of the `gpu-inference` namespace, declared once.

`StackKeys` has one field per key, named as the key. That field is the key's only declaration: its
type, bounds or pattern, default, description, the StackConfig field it fills (`fills`), what a
refusal says is allowed, and how the all-options render switches it on. The rest comes from it or is
checked against it:

- parsing: `read()` validates the strings the Pulumi CLI hands the program (pydantic) and turns the
  first problem into a `ConfigError` naming the stack file, the key, the value and what is allowed;
  infra/config.py then fills each section's frozen dataclass from the keys (`fills`) and checks what
  involves several keys;
- the `config:` block of `Pulumi.yaml`, which `python -m infra.keys` writes; a test fails, naming
  the key, while the file differs (a key declared here and missing there, or the reverse);
- the README's key table (section "Configuration"), checked by a test;
- the all-options render of each stack (`python -m rehearsal.synth <stack> --all-options`, part of
  `make check`), which sets every key's `on` value.

How to add a key (the AWS region stays the provider's own `aws:region`):

1. Declare it below, in the section of the dataclass it fills (`fills` says which):

       hpaMaxReplicas: Integer = key(
           2, "HPA maximum replicas.", fills="inference.hpa_max_replicas", ge=1, le=1000
       )

   Types: `Flag` (true/false), `Integer` (with `ge` and `le`), `str` (with `pattern` and
   `allowed`), `OptionalText` (unset or "" is None; `pattern` and `allowed` apply to a set value),
   a `Literal` of the allowed strings, `ListOf[...]` of these (`each` says what a bad item
   refuses), and `Json` for an object-valued key, which a parse step of infra/config.py reads.
   Without a default the key is required (the CLI refuses a stack file without it). A rule on one
   value that bounds and patterns cannot say is a `field_validator` of StackKeys that raises
   `RefusedError(<what is allowed>)`.
2. Say how the all-options render switches it on: `on=<value>` ("{region}" and "{partition}" in a
   string become the stack's), or `off="<why no render needs it on>"`. A key whose default leaves
   something off (false, unset, empty) must say one of them; a test checks.
3. Add the field to its dataclass in infra/config.py: it is filled with the key's value, unless the
   section's parse step computes it from the key (then `fills` names the field the key decides).
4. Run `.venv/bin/python -m infra.keys` (rewrites Pulumi.yaml's config block), add the key to the
   README's key table, and use the field.

How to remove a key: delete its declaration and add it to `RETIRED_KEYS` with the reason. The CLI
hands the program every key a stack file sets, declared or not, so a stack file that still sets it
is refused with that reason rather than quietly ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticUndefined

from infra import versions

PROJECT: Final = "gpu-inference"
PULUMI_YAML: Final = Path(__file__).resolve().parent.parent / "Pulumi.yaml"


class ConfigError(Exception):
    """A stack config value that the program refuses, with everything needed to fix it."""

    def __init__(self, stack_file: str, key: str, value: object, allowed: str) -> None:
        self.stack_file = stack_file
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{stack_file}: {key} = {value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class Errors:
    """Makes the ConfigErrors of one stack file; a secret key's value is never shown."""

    stack_file: str
    secret_keys: frozenset[str] = frozenset()

    @staticmethod
    def full(key: str) -> str:
        return key if ":" in key else f"{PROJECT}:{key}"

    def __call__(self, key: str, value: object, allowed: str) -> ConfigError:
        full = self.full(key)
        shown = "[secret]" if full in self.secret_keys else value
        return ConfigError(self.stack_file, full, shown, allowed)


class RefusedError(ValueError):
    """Raised by a validator with what is allowed (None: the key's own `allowed`, or its `each` for
    an item of a list)."""

    def __init__(self, allowed: str | None = None) -> None:
        super().__init__(allowed or "refused")
        self.allowed = allowed


# --- Patterns (infra/config.py checks the fields of object-valued keys with some of them) ---------

DURATION: Final = r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$"
AUTOSCALER_DURATION: Final = r"^[1-9][0-9]*(s|m|h)$"
NAME: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
CLUSTER_NAME: Final = r"^[a-zA-Z][-a-zA-Z0-9]{0,99}$"
IAM_PRINCIPAL: Final = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(role|user)/[\w+=,.@/-]+$"
IAM_ROLE: Final = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]+$"
MODEL_ID: Final = r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$"
COMMIT: Final = r"^[0-9a-f]{40}$"
IMAGE_BY_DIGEST: Final = r"^[a-z0-9][\w.-]*(:[0-9]+)?(/[\w.-]+)+(:[\w.-]+)?@sha256:[0-9a-f]{64}$"
CPU: Final = r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$"
MEMORY: Final = r"^[0-9]+(Mi|Gi)$"
AMI_RELEASE: Final = r"^[0-9]+\.[0-9]+\.[0-9]+-[0-9]{8}$"
AMI_RELEASE_EXAMPLE: Final = "1.35.6-20260714"
"""An AMI release of versions.KUBERNETES_VERSION (awslabs/amazon-eks-ami v20260714, the release
versions.GPU_AMI_NVIDIA_DRIVER was read from). The all-options render pins it, so a minor bump that
leaves it behind fails `make check` on the AMI-minor rule of infra/config.py."""
VPC_ID: Final = r"^vpc-[0-9a-f]{8,17}$"
SUBNET_ID: Final = r"^subnet-[0-9a-f]{8,17}$"
ACM_CERTIFICATE: Final = (
    r"^arn:(?P<partition>aws|aws-cn|aws-us-gov):acm:(?P<region>[a-z0-9-]+):[0-9]{12}:"
    r"certificate/[A-Za-z0-9-]+$"
)
# RFC 1123 labels (letters lowercase), at least two of them, at most 253 characters in all; the last
# label must hold a letter so an IPv4 address is never taken for a name.
HOSTNAME: Final = (
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+"
    r"(?=[-a-z0-9]*[a-z])[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
)
# Route 53 hosted zone ids, as the console and `aws route53 list-hosted-zones` show them (without
# the "/hostedzone/" prefix).
ROUTE53_ZONE_ID: Final = r"^Z[A-Z0-9]{1,32}$"

RESERVED_NAMESPACES: Final = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


# --- Types: how each kind of key arrives from the CLI ---------------------------------------------
# The CLI hands the program strings (lists and objects as JSON). Each type decodes its own; pydantic
# then checks the declared bounds and patterns strictly (nothing else is coerced).


def _cli_bool(value: object) -> object:
    if isinstance(value, str):
        if value not in ("true", "false", "True", "False"):
            raise RefusedError()
        return value.lower() == "true"
    return value


def _cli_int(value: object) -> object:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise RefusedError() from None
    return value


def _cli_json(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RefusedError() from None
    return value


def _cli_list(value: object) -> object:
    value = _cli_json(value)
    return tuple(value) if isinstance(value, list) else value


def _unset_is_none(value: object) -> object:
    return None if value == "" else value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise RefusedError() from None


_T = TypeVar("_T")
Flag = Annotated[bool, BeforeValidator(_cli_bool)]
Integer = Annotated[int, BeforeValidator(_cli_int)]
OptionalText = Annotated[str | None, BeforeValidator(_unset_is_none)]
ListOf = Annotated[tuple[_T, ...], BeforeValidator(_cli_list)]
Json = Annotated[Any, BeforeValidator(_cli_json)]
"""An object-valued key (the CLI's JSON), read by a parse step of infra/config.py."""
Cidr = Annotated[str, AfterValidator(_cidr)]
IamPrincipalArn = Annotated[str, StringConstraints(pattern=IAM_PRINCIPAL)]
SubnetId = Annotated[str, StringConstraints(pattern=SUBNET_ID)]
LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
ApiKey = Annotated[str, StringConstraints(min_length=16)]

_UNSET: Final = "__unset__"
"""`on` of a key that did not declare one (JSON-able, so it can sit in the field's extra)."""


def key(
    default: Any = PydanticUndefined,
    description: str = "",
    *,
    fills: str,
    allowed: str | None = None,
    each: str | None = None,
    on: Any = _UNSET,
    off: str | None = None,
    secret: bool = False,
    ge: int | None = None,
    le: int | None = None,
    pattern: str | None = None,
) -> Any:
    """One key's declaration (see the module docstring); no default means required."""
    extra = {"fills": fills, "allowed": allowed, "each": each, "on": on, "off": off}
    extra["secret"] = secret
    return Field(
        default, description=description, ge=ge, le=le, pattern=pattern, json_schema_extra=extra
    )


RETIRED_KEYS: Final = {
    "kubernetesVersion": (
        "no value: the Kubernetes minor is no longer a stack key; it is pinned in "
        f"infra/versions.py (KUBERNETES_VERSION = {versions.KUBERNETES_VERSION}) with the "
        "cluster-autoscaler and GPU driver checked for it. Remove the key from the stack file"
    ),
}
"""Keys an older version of the program declared, and why they went (see "How to remove a key")."""

_CIDRS = "IPv4 CIDRs like 203.0.113.0/24 (host bits zero)"
_ROLE = "an IAM role ARN (arn:aws:iam::<account>:role/<name>) or unset"
_NO_WORLD = "a permission for 0.0.0.0/0, which no render opens to the world"


class StackKeys(BaseModel):
    """The stack keys, each declared once, in the order of Pulumi.yaml's config block."""

    model_config = ConfigDict(strict=True, frozen=True, regex_engine="python-re")

    # --- Stack --------------------------------------------------------------------------------
    production: Flag = key(
        False,
        "Marks a production stack; enables the stricter checks (no world-open API endpoint).",
        fills="production",
        off="a trait of the stack, not a feature: the prod renders are production",
    )

    # --- Network ------------------------------------------------------------------------------
    availabilityZones: ListOf[str] = key(
        description="Availability zones of the region to use (2 to 6); one private and one public "
        "subnet each.",
        fills="network.availability_zones",
    )
    vpcCidr: str = key(
        "10.0.0.0/16",
        "Private IPv4 CIDR of the VPC (/16 to /24). With existingVpcId, the existing VPC's CIDR.",
        fills="network.vpc_cidr",
        allowed="a private IPv4 CIDR from /16 to /24",
    )
    privateSubnetPrefixLength: Integer = key(
        19,
        "Prefix length of each private subnet (nodes and pods; the VPC CNI gives pods VPC IPs, so "
        "large).",
        fills="network.private_subnet_cidrs",
        ge=17,
        le=28,
    )
    publicSubnetPrefixLength: Integer = key(
        24,
        "Prefix length of each public subnet (NAT gateways and internet-facing load balancers "
        "only).",
        fills="network.public_subnet_cidrs",
        ge=17,
        le=28,
    )
    natGateways: Literal["single", "perAz"] = key(
        "single",
        "single: one NAT gateway for all AZs (cheap); perAz: one per AZ (no cross-AZ dependency).",
        fills="network.nat_per_az",
    )
    existingVpcId: OptionalText = key(
        None,
        "Use this VPC instead of creating one (its subnets must carry the kubernetes.io/role/* "
        "tags).",
        fills="network.existing.vpc_id",
        pattern=VPC_ID,
        allowed="a VPC id like vpc-0123456789abcdef0",
        on="vpc-0123456789abcdef0",
    )
    existingPrivateSubnetIds: ListOf[SubnetId] = key(
        (),
        "With existingVpcId, the private subnets for nodes and the control plane (at least two "
        "AZs).",
        fills="network.existing.private_subnet_ids",
        each="subnet ids like subnet-0123456789abcdef0",
        on=["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    )
    existingPublicSubnetIds: ListOf[SubnetId] = key(
        (),
        "With existingVpcId, the public subnets for internet-facing load balancers.",
        fills="network.existing.public_subnet_ids",
        each="subnet ids like subnet-0123456789abcdef0",
        on=["subnet-0123456789abcdef2", "subnet-0123456789abcdef3"],
    )

    # --- Control plane ------------------------------------------------------------------------
    clusterName: OptionalText = key(
        None,
        "EKS cluster name. Unset means gpu-inference-<stack>.",
        fills="cluster.name",
        pattern=CLUSTER_NAME,
        allowed="letters, digits and '-', starting with a letter, at most 100",
        off="a name: the default name renders the same objects",
    )
    kubernetesSupportType: Literal["STANDARD", "EXTENDED"] = key(
        "STANDARD",
        "What EKS does when the Kubernetes minor pinned in infra/versions.py leaves standard "
        "support (the cluster's upgradePolicy): STANDARD (upgrade the control plane; the preview "
        "stops once the minor is past standard support) or EXTENDED (stay on it at the "
        "extended-support price).",
        fills="cluster.support_type",
        # The only render of the extended-support path: the cluster's upgradePolicy, the preview's
        # calendar check that lets a minor past standard support through, and the cost's surcharge
        # line (a Price List product the STANDARD renders never ask for).
        on="EXTENDED",
    )
    endpointPublicAccess: Flag = key(
        True,
        "Expose the API server publicly (limited to publicAccessCidrs); the private endpoint is "
        "always on.",
        fills="cluster.endpoint_public_access",
    )
    publicAccessCidrs: ListOf[Cidr] = key(
        (),
        "CIDRs allowed to reach the public API endpoint: yours, and the egress of the runner of "
        "the CI jobs. Required when endpointPublicAccess is true.",
        fills="cluster.public_access_cidrs",
        each=_CIDRS,
        off="required with the public endpoint, so every stack sets it",
    )
    allowWorldApiAccess: Flag = key(
        False,
        "Explicitly allow 0.0.0.0/0 in publicAccessCidrs of a production stack.",
        fills="cluster.allow_world_api_access",
        off=_NO_WORLD,
    )
    adminPrincipalArns: ListOf[IamPrincipalArn] = key(
        (),
        "IAM roles/users given cluster-admin through EKS access entries. The identity that runs "
        "`pulumi up` must be one of these or deployRoleArn: EKS grants the cluster's creator "
        "nothing.",
        fills="cluster.admin_principal_arns",
        each="IAM role or user ARNs (arn:aws:iam::<account>:role/...)",
        on=["arn:aws:iam::111122223333:role/platform-admin"],
    )
    deployRoleArn: OptionalText = key(
        None,
        "IAM role the deploy workflow assumes for this stack (AWS_DEPLOY_ROLE_ARN of its GitHub "
        "environment): cluster-admin through an access entry. Unset means the stack is not "
        "deployed by CI.",
        fills="cluster.deploy_role_arn",
        pattern=IAM_ROLE,
        allowed=_ROLE,
        on="arn:aws:iam::111122223333:role/gpu-inference-deploy",
    )
    previewRoleArn: OptionalText = key(
        None,
        "IAM role the pull-request preview assumes for this stack (AWS_PREVIEW_ROLE_ARN_<STACK>): "
        "read-only Kubernetes access (AmazonEKSViewPolicy) through an access entry. Unset means "
        "no CI preview.",
        fills="cluster.preview_role_arn",
        pattern=IAM_ROLE,
        allowed=_ROLE,
        on="arn:aws:iam::111122223333:role/gpu-inference-preview",
    )
    privateApiAccessCidrs: ListOf[Cidr] = key(
        (),
        "Networks allowed to reach the private API endpoint on 443 (an ingress rule each on the "
        "cluster security group): the subnet of a self-hosted CI runner in this VPC, or a network "
        "routed to it (peering, transit gateway, VPN). While endpointPublicAccess is on, the "
        "endpoint's name resolves to private addresses only inside the VPC: a routed network "
        "must resolve it through a Route 53 Resolver inbound endpoint "
        "(https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html).",
        fills="cluster.private_api_access_cidrs",
        each=_CIDRS,
        on=["10.64.0.0/12"],
    )
    controlPlaneLogTypes: ListOf[LogType] = key(
        ("api", "audit", "authenticator"),
        "Control-plane log types sent to CloudWatch (api, audit, authenticator, controllerManager, "
        "scheduler).",
        fills="cluster.log_types",
        on=list(get_args(LogType)),
    )

    # --- Node groups --------------------------------------------------------------------------
    systemNodeGroup: Json = key(
        {
            "instanceTypes": ["m6i.large", "m7i.large"],
            "minSize": 2,
            "desiredSize": 2,
            "maxSize": 4,
            "diskGiB": 50,
        },
        "On-demand, untainted group for cluster add-ons. Object with instanceTypes (list), "
        "minSize (>= 1), desiredSize, maxSize and diskGiB (default 50).",
        fills="node_groups.system",
        allowed="an object",
    )
    gpuNodeGroups: Json = key(
        [
            {
                "name": "gpu-spot",
                "capacityType": "SPOT",
                "instanceTypes": ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"],
                "minSize": 0,
                "desiredSize": 0,
                "maxSize": 2,
            }
        ],
        "GPU managed node groups (tainted nvidia.com/gpu=true:NoSchedule). List of objects with "
        "name, capacityType (SPOT or ON_DEMAND), instanceTypes (one GPU shape per group, known to "
        "infra/config.py), minSize, desiredSize, maxSize and diskGiB (default 150, at least 100). "
        "The autoscaler prefers SPOT groups and uses ON_DEMAND groups as the fallback.",
        fills="node_groups.gpu",
        allowed="a list of objects",
    )
    amiReleaseVersion: OptionalText = key(
        None,
        "Pin the EKS AMI release of every node group, one of the pinned Kubernetes minor (e.g. "
        f"{AMI_RELEASE_EXAMPLE}). Unset means the latest at creation.",
        fills="node_groups.ami_release_version",
        pattern=AMI_RELEASE,
        allowed=f"an EKS AMI release of the pinned Kubernetes minor, like {AMI_RELEASE_EXAMPLE}",
        on=AMI_RELEASE_EXAMPLE,
    )

    # --- Cluster autoscaler -------------------------------------------------------------------
    autoscalerScaleDownUnneededTime: str = key(
        "10m",
        "How long a node must be unneeded before cluster-autoscaler removes it.",
        fills="autoscaler.scale_down_unneeded_time",
        pattern=AUTOSCALER_DURATION,
        allowed="a duration like 10m",
    )
    autoscalerMaxNodeProvisionTime: str = key(
        "15m",
        "How long to wait for a node before trying the next group (spot capacity can be short).",
        fills="autoscaler.max_node_provision_time",
        pattern=AUTOSCALER_DURATION,
        allowed="a duration like 15m",
    )

    # --- GPU sharing --------------------------------------------------------------------------
    timeSlicingReplicas: Integer = key(
        1,
        "Pods sharing one GPU through NVIDIA time-slicing (1 = off).",
        fills="gpu.time_slicing_replicas",
        ge=1,
        le=16,
        on=2,
    )

    # --- Monitoring and alerting --------------------------------------------------------------
    prometheusRetention: str = key(
        "15d",
        "Prometheus TSDB retention (a Prometheus duration).",
        fills="monitoring.prometheus_retention",
        pattern=DURATION,
        allowed="a Prometheus duration like 15d",
    )
    prometheusVolumeGiB: Integer = key(
        50,
        "Size of Prometheus' gp3 persistent volume in GiB.",
        fills="monitoring.prometheus_volume_gib",
        ge=10,
        le=16384,
    )
    prometheusScrapeInterval: str = key(
        "15s",
        "Prometheus scrape interval (the HPA reacts no faster than this).",
        fills="monitoring.scrape_interval",
        pattern=DURATION,
        allowed="a Prometheus duration like 15s",
    )
    alertReceivers: Json = key(
        [],
        "Where Alertmanager delivers alerts. List of objects with name (a DNS label; not nowhere), "
        "type (webhook, slack or pagerduty) and alerts (page: critical alerts, ticket: warnings; "
        "default both), plus per type - webhook: url (plain) and an optional bearerToken; slack: "
        "webhookUrl (the incoming webhook) and an optional channel; pagerduty: routingKey (Events "
        "API v2 integration key). bearerToken, webhookUrl and routingKey must be secrets (pulumi "
        "config set --secret --path 'alertReceivers[0].routingKey' <key>); they reach the "
        "Alertmanager pod as files from a Kubernetes Secret, never a ConfigMap. Empty means alerts "
        "reach nobody (the preview warns).",
        fills="monitoring.alert_receivers",
        allowed="a list of receiver objects",
        # One receiver of each type, each with its credential (a secret, as the program requires).
        on=[
            {
                "name": "incidents",
                "type": "webhook",
                "url": "https://alerts.example.com/alertmanager",
                "bearerToken": {"secure": "v1:all-options"},
            },
            {
                "name": "chat",
                "type": "slack",
                "alerts": ["ticket"],
                "webhookUrl": {"secure": "v1:all-options"},
                "channel": "#inference-alerts",
            },
            {
                "name": "oncall",
                "type": "pagerduty",
                "alerts": ["page"],
                "routingKey": {"secure": "v1:all-options"},
            },
        ],
    )
    grafana: Flag = key(
        True,
        "Deploy Grafana (system nodes, no Service exposed outside the cluster) with the Prometheus "
        "data source and the inference dashboard provisioned; open it with kubectl port-forward "
        '(README "Using the endpoint").',
        fills="monitoring.grafana",
    )

    # --- Model --------------------------------------------------------------------------------
    modelId: str = key(
        "thenlper/gte-large-zh",
        "Hugging Face model id baked into the image (any BERT-like sentence-embedding model).",
        fills="model.id",
        pattern=MODEL_ID,
        allowed="a Hugging Face model id like thenlper/gte-large-zh",
    )
    modelRevision: OptionalText = key(
        None,
        "Pinned Hub commit (40 hex) of the model. Unset means the head at build time (the image "
        "digest pins it).",
        fills="model.revision",
        pattern=COMMIT,
        allowed="a 40-character commit hash from the model's Hub history (branches and tags move)",
        on="64c364e579de308104a9b2c170ca009502f4f545",
    )
    embeddingDimension: Integer = key(
        1024,
        "Output dimension of the model (published as a stack output for clients).",
        fills="model.embedding_dimension",
        ge=1,
        le=8192,
    )
    dtype: Literal["float16", "bfloat16", "float32"] = key(
        "float16",
        "Inference dtype on the GPU (float16, bfloat16 or float32).",
        fills="model.dtype",
    )
    normalize: Literal["true", "false", "model"] = key(
        "true",
        "L2-normalise every vector (true: what OpenAI-SDK clients assume, dot product = cosine), "
        "never (false), or as the model's modules.json says (model). true by default because not "
        "every checkpoint ships a Normalize module although its card normalises (the GTE cards "
        "do).",
        fills="model.normalize",
    )

    # --- Inference service --------------------------------------------------------------------
    image: OptionalText = key(
        None,
        "Prebuilt server image pinned by digest (...@sha256:<64 hex>). Unset means build "
        "./Dockerfile into ECR.",
        fills="inference.image",
        pattern=IMAGE_BY_DIGEST,
        allowed="an image pinned by digest, like 123456789012.dkr.ecr.us-west-2.amazonaws.com/"
        "embed@sha256:<64 hex>; leave it unset to build ./Dockerfile into ECR",
        on="123456789012.dkr.ecr.{region}.amazonaws.com/gpu-inference@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    namespace: str = key(
        "inference",
        "Namespace of the inference workload.",
        fills="inference.namespace",
        pattern=NAME,
        allowed="a lowercase DNS label",
    )
    hpaMinReplicas: Integer = key(
        1,
        "HPA minimum replicas (each replica holds one GPU).",
        fills="inference.hpa_min_replicas",
        ge=1,
        le=1000,
    )
    hpaMaxReplicas: Integer = key(
        2,
        "HPA maximum replicas (at most the GPU groups' capacity).",
        fills="inference.hpa_max_replicas",
        ge=1,
        le=1000,
    )
    hpaTargetInFlight: Integer = key(
        16,
        "HPA target of in-flight requests per pod (the primary scaling signal).",
        fills="inference.hpa_target_in_flight",
        ge=1,
        le=10_000,
    )
    hpaTargetGpuUtilization: Integer = key(
        80,
        "HPA target GPU utilisation in percent (the secondary scaling signal).",
        fills="inference.hpa_target_gpu_utilization",
        ge=1,
        le=100,
    )
    maxBatchTokens: Integer = key(
        32768,
        "Server batching limit, padded tokens per forward pass.",
        fills="inference.max_batch_tokens",
        ge=512,
        le=1_048_576,
    )
    maxBatchSize: Integer = key(
        128,
        "Server batching limit, inputs per forward pass.",
        fills="inference.max_batch_size",
        ge=1,
        le=4096,
    )
    maxQueueMs: Integer = key(
        1000,
        "Server admission target in milliseconds: a request that would wait longer than this for "
        "queued work (estimated from the GPU's measured speed) is answered 429 with Retry-After, "
        "so what is admitted is answered in time under overload.",
        fills="inference.max_queue_ms",
        ge=50,
        le=600_000,
    )
    maxQueueItems: Integer = key(
        16384,
        "Inputs the server holds waiting for the GPU at most (a memory bound; admission is by "
        "maxQueueMs).",
        fills="inference.max_queue_items",
        ge=1,
        le=1_000_000,
    )
    podCpuRequest: str = key(
        "2",
        "CPU request of an inference pod (tokenisation runs on the CPU).",
        fills="inference.cpu_request",
        pattern=CPU,
        allowed="a Kubernetes CPU quantity like 2 or 1500m",
    )
    podMemoryRequest: str = key(
        "8Gi",
        "Memory request of an inference pod.",
        fills="inference.memory_request",
        pattern=MEMORY,
        allowed="a Kubernetes memory quantity like 8Gi",
    )
    internetFacing: Flag = key(
        False,
        "Expose the service through an internet-facing NLB (requires apiKeys, and "
        "tlsCertificateArn in a production stack); default is internal.",
        fills="inference.internet_facing",
        on=True,
    )
    clientCidrs: ListOf[Cidr] = key(
        (),
        "CIDRs allowed to reach the load balancer. Empty means the VPC CIDR only.",
        fills="inference.client_cidrs",
        each=_CIDRS,
        on=["10.0.0.0/16", "198.51.100.0/24"],
    )
    allowWorldClients: Flag = key(
        False,
        "Explicitly allow 0.0.0.0/0 in clientCidrs (only together with internetFacing).",
        fills="inference.allow_world_clients",
        off=_NO_WORLD,
    )
    apiKeys: ListOf[ApiKey] = key(
        (),
        "API keys clients must send as Bearer tokens. Set them as secrets (pulumi config set "
        "--secret --path 'apiKeys[0]' <key>); the program refuses plain values.",
        fills="inference.api_keys",
        allowed="a list of secret strings of at least 16 characters (set with --secret)",
        each="a list of secret strings of at least 16 characters (set with --secret)",
        secret=True,
        on={"secure": "v1:all-options"},
    )
    tlsCertificateArn: OptionalText = key(
        None,
        "ACM certificate (arn:<partition>:acm:<stack region>:<account>:certificate/<id>) the NLB "
        "terminates TLS with: the endpoint listens on 443 (https://) and forwards plain TCP to "
        "the pods. Unset means plain HTTP on port 80. Required when a production stack is "
        "internetFacing (API keys must not cross the internet in clear text).",
        fills="inference.tls_certificate_arn",
        pattern=ACM_CERTIFICATE,
        allowed="an ACM certificate ARN like "
        "arn:aws:acm:<region>:<12-digit account>:certificate/<id>, or unset for plain HTTP",
        on="arn:{partition}:acm:{region}:111122223333:certificate/"
        "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
    )
    endpointHostname: OptionalText = key(
        None,
        "The DNS name clients use, e.g. embeddings.example.com (lowercase, no scheme, port or "
        "path): endpointUrl and openaiBaseUrl use it instead of the NLB's AWS hostname. With "
        "tlsCertificateArn it must be a name the certificate covers; required when a production "
        "stack is internetFacing with TLS. Point it at the loadBalancerHostname output (CNAME), "
        "or set route53ZoneId to have the program do it.",
        fills="inference.endpoint_hostname",
        pattern=HOSTNAME,
        allowed="a lowercase fully qualified DNS name like embeddings.example.com (RFC 1123 "
        "labels, no scheme, port, path or trailing dot), or unset to use the NLB's hostname",
        on="embeddings.example.com",
    )
    route53ZoneId: OptionalText = key(
        None,
        "Route 53 hosted zone id (Z...) of endpointHostname's domain: the program creates a CNAME "
        "record (TTL 60) from endpointHostname to the NLB hostname. Requires endpointHostname, "
        "which must not be the zone apex. Unset means you create the record yourself.",
        fills="inference.route53_zone_id",
        pattern=ROUTE53_ZONE_ID,
        allowed="a Route 53 hosted zone id like Z0123456789ABCDEFGHIJ, or unset to create the DNS "
        "record yourself",
        on="Z0123456789ABCDEFGHIJ",
    )

    # --- Capacity ahead of load ---------------------------------------------------------------
    gpuHeadroom: Integer = key(
        0,
        "GPUs kept warm ahead of load: that many placeholder pods, each with an inference pod's "
        "requests and the inference image, at the lowest priority cluster-autoscaler still "
        "scales up for (-10). A new replica preempts one and starts on a node that is up and "
        "holds the image; the evicted placeholder makes the autoscaler add the next spare. 0: "
        "none (every scale-out waits for a node).",
        fills="capacity.gpu_headroom",
        ge=0,
        le=64,
        on=1,
    )
    servingHours: Json = key(
        {},
        "Working-hours windows in which the inference Deployment runs; outside all of them "
        "CronJobs scale it (and the gpuHeadroom placeholders) to zero, so cluster-autoscaler "
        "removes the GPU nodes, and back to hpaMinReplicas (and gpuHeadroom) when a window "
        "opens. Object with timezone (IANA name, e.g. Europe/Berlin) and windows, a list of "
        'objects with days (mon..sun or ranges like mon-fri), start and end ("HH:MM", 24-hour; '
        "an end not after the start closes the next day; 24:00 is midnight). Empty means serve "
        "around the clock.",
        fills="capacity.serving_hours",
        allowed='an object {"timezone": "<IANA name>", "windows": [{"days": ["mon-fri"], '
        '"start": "07:00", "end": "19:00"}]}, or unset to serve around the clock',
        # Weekday working hours and an overnight window across midnight: the CronJobs, their
        # Role and ConfigMap render with both kinds of edge.
        on={
            "timezone": "Europe/Berlin",
            "windows": [
                {"days": ["mon-fri"], "start": "07:00", "end": "19:00"},
                {"days": ["sat"], "start": "22:00", "end": "02:00"},
            ],
        },
    )

    # --- Rules on one value that bounds and patterns cannot say ------------------------------

    @field_validator("vpcCidr")
    @classmethod
    def _private_vpc(cls, value: str) -> str:
        try:
            vpc = ipaddress.IPv4Network(value, strict=True)
        except ValueError:
            raise RefusedError() from None
        if not (vpc.is_private and 16 <= vpc.prefixlen <= 24):
            raise RefusedError("a private (RFC 1918) IPv4 CIDR from /16 to /24")
        return str(vpc)

    @field_validator("namespace")
    @classmethod
    def _dedicated_namespace(cls, value: str) -> str:
        if value in RESERVED_NAMESPACES or len(value) > 63:
            raise RefusedError("a dedicated namespace (not a system one)")
        return value


# --- What each declaration says -------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One key's declaration, read back from its StackKeys field."""

    name: str
    description: str
    default: Any
    """PydanticUndefined when the key is required."""
    fills: str
    allowed: str
    """What a refusal of the whole value says is allowed."""
    each: str
    """What a refusal of one item of a list says is allowed."""
    pulumi_type: str | None
    """string, integer, boolean or array; None for an object-valued key (Pulumi.yaml `value`)."""
    optional: bool
    """Unset ("") is a value (None)."""
    on: Any
    off: str | None
    secret: bool

    @property
    def full(self) -> str:
        return f"{PROJECT}:{self.name}"

    @property
    def required(self) -> bool:
        return self.default is PydanticUndefined

    @property
    def section(self) -> str:
        """The StackConfig section the key fills ("" for StackConfig's own fields)."""
        return self.fills.split(".")[0] if "." in self.fills else ""

    @property
    def has_on(self) -> bool:
        return self.on != _UNSET

    @property
    def default_is_off(self) -> bool:
        """The default leaves something off: false, unset or empty."""
        return not self.required and self.default in (False, None, (), [], {})


def _spec(name: str) -> KeySpec:
    info = StackKeys.model_fields[name]
    extra = info.json_schema_extra
    assert isinstance(extra, dict), f"{name}: declare it with key()"
    annotation = info.annotation
    bounds = {k: getattr(m, k) for m in info.metadata for k in ("ge", "le") if hasattr(m, k)}
    pulumi_type: str | None
    each = "a list of strings"
    if annotation is bool:
        pulumi_type, allowed = "boolean", "true or false"
    elif annotation is int:
        pulumi_type, allowed = "integer", f"an integer from {bounds['ge']} to {bounds['le']}"
    elif get_origin(annotation) is Literal:
        pulumi_type, allowed = "string", f"one of {', '.join(get_args(annotation))}"
    elif get_origin(annotation) is tuple:
        pulumi_type, allowed = "array", "a list of strings"
        (item, _) = get_args(annotation)
        if get_origin(item) is Literal:
            each = f"a subset of {', '.join(get_args(item))}"
    else:
        # A string or an object: only the declaration can say what is allowed.
        pulumi_type, allowed = (None if annotation is Any else "string"), ""
        if not extra["allowed"]:
            raise TypeError(f"infra/keys.py: {name} must declare allowed= (what a refusal says)")
    return KeySpec(
        name=name,
        description=info.description or "",
        default=info.default,
        fills=str(extra["fills"]),
        allowed=str(extra["allowed"] or allowed),
        each=str(extra["each"] or each),
        pulumi_type=pulumi_type,
        optional=annotation == (str | None),
        on=extra["on"],
        off=extra["off"] if isinstance(extra["off"], str) else None,
        secret=bool(extra["secret"]),
    )


@functools.cache
def specs() -> dict[str, KeySpec]:
    """Every key's declaration, by key name, in declaration order."""
    return {name: _spec(name) for name in StackKeys.model_fields}


# --- Reading the CLI's values ---------------------------------------------------------------------


def read(values: Mapping[str, str], errors: Errors) -> StackKeys:
    """Every key of the project namespace, validated. `values` maps full keys
    (`gpu-inference:vpcCidr`) to what the CLI hands the program; a key it lacks takes its
    declared default, as the CLI fills it from Pulumi.yaml."""
    for name, why in RETIRED_KEYS.items():
        # Refused, not ignored: a stack that sets it expects it to take effect.
        retired = values.get(f"{PROJECT}:{name}")
        if retired is not None:
            raise errors(name, retired, why)
    given: dict[str, str] = {}
    for spec in specs().values():
        value = values.get(spec.full)
        if value is None and not spec.required:
            continue
        if value is None or (value == "" and not spec.optional):
            raise errors(spec.name, None, f"required; {spec.allowed}")
        given[spec.name] = value
    try:
        return StackKeys.model_validate(given)
    except ValidationError as invalid:
        raise _refusal(invalid, errors) from None


def _refusal(invalid: ValidationError, errors: Errors) -> ConfigError:
    """The first problem (in declaration order) as the ConfigError a person can act on."""
    problem = invalid.errors()[0]
    spec = specs()[str(problem["loc"][0])]
    item = len(problem["loc"]) > 1
    allowed, shown = (spec.each if item else spec.allowed), problem["input"]
    cause = (problem.get("ctx") or {}).get("error")
    if isinstance(cause, RefusedError) and cause.allowed:
        allowed = cause.allowed
    return errors(spec.name, "[secret]" if spec.secret else shown, allowed)


# --- Pulumi.yaml ----------------------------------------------------------------------------------

SECTION_TITLES: Final = {
    "": "Stack",
    "network": "Network",
    "cluster": "Control plane",
    "node_groups": "Node groups",
    "autoscaler": "Cluster autoscaler",
    "gpu": "GPU sharing",
    "monitoring": "Monitoring and alerting",
    "model": "Model",
    "inference": "Inference service",
    "capacity": "Capacity ahead of load",
}
"""Pulumi.yaml's section headings, by the StackConfig section the keys fill."""

CONFIG_HEADER: Final = "config:\n"
_WIDTH: Final = 110
"""Where Pulumi.yaml's folded descriptions wrap."""
_MAX_LINE: Final = 120
"""yamllint's line-length maximum (.yamllint): a description that fits stays on one line."""
_RULER: Final = 104
_GENERATED: Final = (
    "  # Generated from infra/keys.py by `python -m infra.keys`: change a key there, not here.\n"
)


class _IndentedDumper(yaml.SafeDumper):
    """Indents a sequence inside a mapping, as yamllint's default `indent-sequences` wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _scalar(value: Any) -> str:
    """A value in YAML flow style, a string plain where YAML reads it back unchanged."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, str):
        try:
            plain = bool(value) and yaml.safe_load(f"key: {value}") == {"key": value}
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value)


def _description(text: str) -> list[str]:
    line = f"    description: {_scalar(text)}"
    if len(line) <= _MAX_LINE:
        return [line]
    wrapped = textwrap.wrap(text, _WIDTH - 6, break_long_words=False, break_on_hyphens=False)
    return ["    description: >-", *(f"      {part}" for part in wrapped)]


def _entry(spec: KeySpec) -> list[str]:
    lines = [f"  {spec.name}:"]
    if spec.pulumi_type is not None:
        lines.append(f"    type: {spec.pulumi_type}")
        if spec.pulumi_type == "array":
            lines += ["    items:", "      type: string"]
        if not spec.required:
            default = "" if spec.default is None else spec.default
            lines.append(f"    default: {_scalar(default)}")
    lines += _description(spec.description)
    if spec.pulumi_type is None:
        # Object-valued keys cannot carry a schema type (Pulumi's project schema has string,
        # integer, boolean and array only): their project-wide value is `value`.
        value = yaml.dump(
            {"value": spec.default},
            Dumper=_IndentedDumper,
            sort_keys=False,
            default_flow_style=None,
        )
        lines += [f"    {line}" for line in value.splitlines()]
    return lines


def pulumi_config_block() -> str:
    """Pulumi.yaml's `config:` block as the declarations say it (the file's last block).

    What the Pulumi CLI accepts there (pulumi/pulumi sdk/go/common/workspace/project.json,
    `$defs.configTypeDeclaration`): type (string, integer, boolean, array), items (the array's item
    type), description, secret, default and value; project.go's `Validate` refuses `default`
    together with `value`, an array without `items` and a default of another type."""
    lines = [CONFIG_HEADER.rstrip("\n"), _GENERATED.rstrip("\n")]
    section = None
    for spec in specs().values():
        if spec.section != section:
            section = spec.section
            title = f"  # --- {SECTION_TITLES[section]} "
            lines += ["", title + "-" * (_RULER - len(title))]
        lines += _entry(spec)
    return "\n".join(lines) + "\n"


def with_config_block(pulumi_yaml: str) -> str:
    """The project file with its config block (from `config:` to the end) generated anew."""
    head, found, _ = pulumi_yaml.partition(CONFIG_HEADER)
    if not found:
        raise ValueError(f"{PULUMI_YAML.name} has no top-level `config:` block")
    return head + pulumi_config_block()


def drift(pulumi_yaml: str) -> list[str]:
    """How the project file's config block differs from the declarations, key by key (empty: it
    is exactly what `python -m infra.keys` writes)."""
    file_keys = (yaml.safe_load(pulumi_yaml) or {}).get("config") or {}
    declared = yaml.safe_load(pulumi_config_block())["config"]
    problems = [
        f"{name}: declared in infra/keys.py but not in {PULUMI_YAML.name}"
        for name in declared
        if name not in file_keys
    ]
    problems += [
        f"{name}: in {PULUMI_YAML.name} but not declared in infra/keys.py"
        for name in file_keys
        if name not in declared
    ]
    problems += [
        f"{name}: {PULUMI_YAML.name} says {file_keys[name]!r}, infra/keys.py {declared[name]!r}"
        for name in declared
        if name in file_keys and file_keys[name] != declared[name]
    ]
    if not problems and with_config_block(pulumi_yaml) != pulumi_yaml:
        problems.append(f"{PULUMI_YAML.name}: the config block is laid out differently")
    return problems


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.keys [--check]`: rewrite Pulumi.yaml's config block (or only compare)."""
    args = sys.argv[1:] if argv is None else argv
    current = PULUMI_YAML.read_text()
    problems = drift(current)
    if not problems:
        print(f"{PULUMI_YAML.name}: the config block is what infra/keys.py declares")
        return 0
    if "--check" in args:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("run: python -m infra.keys", file=sys.stderr)
        return 1
    PULUMI_YAML.write_text(with_config_block(current))
    print(f"{PULUMI_YAML.name}: config block rewritten from infra/keys.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
