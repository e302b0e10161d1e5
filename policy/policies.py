"""The policies of the gpu-inference policy pack, as pure functions.

Each policy is `validate(resource_type, props, stack) -> list of violation messages`, over the
resource's inputs exactly as the Pulumi engine sees them (camelCase property names; a value unknown
during a preview is absent or None). policy/pack.py wraps them for `pulumi preview --policy-pack
policy`; the tests call them on the real program's resources under the mock engine
(rehearsal/mockengine.py), so a policy and the program cannot silently disagree.

Only the standard library and infra/gpu_spec.py (itself stdlib-only): the pack runs in its own
virtualenv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from infra.gpu_spec import GPU_NODE_LABELS, GPU_RESOURCE, GPU_TAINT


@dataclass(frozen=True)
class StackInfo:
    name: str
    production: bool


Validate = Callable[[str, Mapping[str, Any], StackInfo, str | None], list[str]]
"""(resource type, inputs, stack, URN or None when the program declares the resource itself):
the URN tells whether a pinned upstream chart rendered the object."""

CHART_V4 = "kubernetes:helm.sh/v4:Chart"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    resource_types: frozenset[str] | None
    """The resource types the policy looks at (None: every type; it filters itself)."""
    validate: Validate


def rendered_by_chart(urn: str | None) -> str | None:
    """The `helm.v4.Chart` resource whose render registered a resource, read from its URN: the
    provider registers each rendered object as a child of the chart (type chain
    `...$kubernetes:helm.sh/v4:Chart$kubernetes:apps/v1:Deployment`) named
    `<chart resource>:<namespace>/<name>`. None for anything the program declares itself."""
    if not urn:
        return None
    parts = urn.split("::")
    if len(parts) < 4:
        return None
    chain = parts[2].split("$")
    if len(chain) >= 2 and chain[-2] == CHART_V4:
        return parts[3].split(":", 1)[0]
    return None


# --- Kubernetes workloads -------------------------------------------------------------------------

_WORKLOAD_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
WORKLOAD_TYPES = frozenset(_WORKLOAD_POD_SPEC_PATHS)


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    node: Any = props
    for key in _WORKLOAD_POD_SPEC_PATHS.get(resource_type, ()):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) and node is not props else None


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _gpu_count(container: Mapping[str, Any]) -> float:
    resources = container.get("resources") or {}
    # Extended resources are set as limits (requests default to them); either counts.
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


def _tolerates_gpu_taint(spec: Mapping[str, Any]) -> bool:
    for toleration in spec.get("tolerations") or []:
        key, operator = toleration.get("key"), toleration.get("operator", "Equal")
        effect = toleration.get("effect")
        if effect not in (None, "", GPU_TAINT.effect):
            continue
        if operator == "Exists" and key in (None, "", GPU_TAINT.key):
            return True
        if (
            operator == "Equal"
            and key == GPU_TAINT.key
            and toleration.get("value") == GPU_TAINT.value
        ):
            return True
    return False


def _targets_gpu_nodes(spec: Mapping[str, Any]) -> bool:
    selector = spec.get("nodeSelector") or {}
    if any(selector.get(k) == v for k, v in GPU_NODE_LABELS.items()):
        return True
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") in GPU_NODE_LABELS:
                return True
    return False


def _workload_name(props: Mapping[str, Any]) -> str:
    metadata = props.get("metadata") or {}
    namespace = metadata.get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{props.get('kind', 'object')} {where}{metadata.get('name', '?')}"


def gpu_pods_tolerate_taint_and_request_gpu(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """A pod that asks for a GPU must tolerate the GPU taint (or it never schedules on a GPU node),
    and a pod placed on GPU nodes must ask for a GPU (or it holds an expensive node without using
    its GPU). DaemonSets are node agents (device plugin, DCGM exporter): they tolerate the taint
    without a GPU."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    name = _workload_name(props)
    gpus = sum(_gpu_count(c) for c in _containers(spec))
    tolerates = _tolerates_gpu_taint(spec)
    violations = []
    taint = f"{GPU_TAINT.key}={GPU_TAINT.value}:{GPU_TAINT.effect}"
    if gpus > 0 and not tolerates:
        violations.append(
            f"{name} requests {GPU_RESOURCE} but does not tolerate the GPU node taint {taint}: "
            "it can never be scheduled on a GPU node (add infra.gpu_spec.toleration())"
        )
    is_node_agent = resource_type == "kubernetes:apps/v1:DaemonSet"
    if gpus == 0 and not is_node_agent and (_targets_gpu_nodes(spec)):
        violations.append(
            f"{name} is placed on GPU nodes but requests no {GPU_RESOURCE}: set "
            f"resources.limits['{GPU_RESOURCE}'] on its container, or schedule it on system nodes"
        )
    return violations


def images_pinned_by_digest(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """Never the moving `latest` tag (nor no tag, which means `latest`) anywhere. The program's own
    workloads reference every image by digest: what was reviewed is what runs, and a node
    replacement cannot pull different code. Objects rendered from a pinned upstream chart
    (`urn` under a helm.v4.Chart) may use the chart's version tag instead: the chart version in
    infra/versions.py fixes that tag (each chart's default image tag is its appVersion) and the
    rehearsal shows it in the synth diff, but a registry could still re-point the tag. Digests for
    them would have to be read from the registries at each bump, which the offline rehearsal
    cannot verify (README, "Verification gate")."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    chart = rendered_by_chart(urn)
    violations = []
    for container in _containers(spec):
        image = container.get("image")
        if not isinstance(image, str) or not image:
            continue  # unknown until the image is built (preview): judged at `pulumi up`
        repository, _, digest = image.partition("@")
        tag = repository.rsplit("/", 1)[-1].partition(":")[2]
        where = f"{_workload_name(props)} container {container.get('name', '?')!r}"
        if chart is not None:
            where += f" (rendered by chart {chart})"
        if tag == "latest":
            violations.append(
                f"{where} uses the `latest` tag ({image}); pin a version and a digest"
            )
        elif digest.startswith("sha256:"):
            continue
        elif chart is None:
            violations.append(
                f"{where} image {image} has no @sha256 digest; reference it by digest"
            )
        elif not tag:
            violations.append(
                f"{where} image {image} has neither a version tag nor a digest (it means "
                "`latest`); set the chart's image tag or digest in its values"
            )
    return violations


# --- AWS ------------------------------------------------------------------------------------------

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
CLUSTER = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
WORLD = frozenset({"0.0.0.0/0", "::/0"})


def _is_gpu_node_group(props: Mapping[str, Any]) -> bool:
    taints = props.get("taints") or []
    if any(t.get("key") == GPU_TAINT.key for t in taints if isinstance(t, Mapping)):
        return True
    labels = props.get("labels") or {}
    if any(labels.get(k) == v for k, v in GPU_NODE_LABELS.items()):
        return True
    return "NVIDIA" in str(props.get("amiType") or "").upper()


def gpu_node_groups_spot_outside_production(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """Outside production every GPU node group is SPOT: on-demand GPUs cost about three times as
    much, and a non-production stack can wait for capacity."""
    if stack.production or not _is_gpu_node_group(props):
        return []
    capacity = props.get("capacityType") or "ON_DEMAND"  # the EKS API's default
    if capacity != "SPOT":
        group = props.get("nodeGroupName") or "GPU node group"
        return [
            f"{group} in non-production stack {stack.name!r} has capacityType {capacity}; use SPOT "
            "(on-demand GPU fallback belongs to production stacks)"
        ]
    return []


def eks_api_not_world_open_in_production(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """In production the public API endpoint is off or limited to known CIDRs, never the whole
    internet."""
    if not stack.production:
        return []
    vpc = props.get("vpcConfig") or {}
    # The EKS API's defaults: public endpoint on, open to 0.0.0.0/0.
    if vpc.get("endpointPublicAccess") is False:
        return []
    cidrs = vpc.get("publicAccessCidrs")
    if not cidrs:
        return [
            f"EKS cluster {props.get('name', '')!s} has a public endpoint with no "
            "publicAccessCidrs, which "
            "EKS opens to 0.0.0.0/0; list the allowed CIDRs or disable the public endpoint"
        ]
    open_to = sorted(WORLD.intersection(cidrs))
    if open_to:
        return [
            f"EKS cluster {props.get('name', '')!s} public endpoint is open to "
            f"{', '.join(open_to)} in "
            f"production stack {stack.name!r}; restrict publicAccessCidrs"
        ]
    return []


def eks_secrets_encrypted_with_kms(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """Kubernetes Secrets are envelope-encrypted with a KMS key, so an etcd snapshot does not reveal
    them."""
    config = props.get("encryptionConfig")
    # pulumi-aws 7 takes one object; older providers took a list of them. Under the policy SDK the
    # values are Mapping/Sequence proxies, never dict/list.
    configs = [config] if isinstance(config, Mapping) else list(config or [])
    for entry in configs:
        if not isinstance(entry, Mapping):
            continue
        has_key = "keyArn" in (entry.get("provider") or {})
        if "secrets" in (entry.get("resources") or []) and has_key:
            return []
    return [
        f"EKS cluster {props.get('name', '')!s} has no KMS envelope encryption of secrets; set "
        "encryptionConfig {provider: {keyArn}, resources: [secrets]}"
    ]


def imdsv2_required(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> list[str]:
    """Instances require IMDSv2 session tokens (or have no metadata endpoint at all): IMDSv1 lets a
    server-side request forgery in a pod read the node role's credentials."""
    if resource_type == NODE_GROUP:
        # Without a launch template, a managed node group gets the AMI's metadata defaults.
        if not props.get("launchTemplate"):
            group = props.get("nodeGroupName") or "node group"
            return [f"{group} has no launch template, so nothing enforces IMDSv2 on its nodes"]
        return []
    options = props.get("metadataOptions") or {}
    if options.get("httpEndpoint") == "disabled" or options.get("httpTokens") == "required":
        return []
    what = "launch template" if resource_type == LAUNCH_TEMPLATE else "instance"
    return [
        f"{what} {props.get('name') or props.get('namePrefix') or ''} allows IMDSv1 "
        f"(metadataOptions.httpTokens={options.get('httpTokens')!r}); set httpTokens: required"
    ]


POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(
        "gpu-pods-tolerate-taint-and-request-gpu",
        "GPU pods tolerate the GPU node taint and request nvidia.com/gpu.",
        WORKLOAD_TYPES,
        gpu_pods_tolerate_taint_and_request_gpu,
    ),
    PolicySpec(
        "images-pinned-by-digest",
        "The program's container images are referenced by digest; images of pinned upstream "
        "charts by their version tag at least; never the latest tag.",
        WORKLOAD_TYPES,
        images_pinned_by_digest,
    ),
    PolicySpec(
        "gpu-node-groups-spot-outside-production",
        "GPU node groups in non-production stacks use SPOT capacity.",
        frozenset({NODE_GROUP}),
        gpu_node_groups_spot_outside_production,
    ),
    PolicySpec(
        "eks-api-not-world-open-in-production",
        "The EKS public API endpoint is never open to 0.0.0.0/0 in production.",
        frozenset({CLUSTER}),
        eks_api_not_world_open_in_production,
    ),
    PolicySpec(
        "eks-secrets-encrypted-with-kms",
        "EKS envelope-encrypts Kubernetes Secrets with a KMS key.",
        frozenset({CLUSTER}),
        eks_secrets_encrypted_with_kms,
    ),
    PolicySpec(
        "imdsv2-required",
        "EC2 instances, launch templates and managed node groups require IMDSv2.",
        frozenset({NODE_GROUP, LAUNCH_TEMPLATE, INSTANCE}),
        imdsv2_required,
    ),
)


def violations(
    resource_type: str, props: Mapping[str, Any], stack: StackInfo, urn: str | None = None
) -> dict[str, list[str]]:
    """Every policy's violations for one resource, by policy name (policies with none left out).
    `urn` is the resource's URN as the engine hands it to the pack (None: declared by the
    program)."""
    found: dict[str, list[str]] = {}
    for policy in POLICIES:
        if policy.resource_types is None or resource_type in policy.resource_types:
            messages = policy.validate(resource_type, props, stack, urn)
            if messages:
                found[policy.name] = messages
    return found
