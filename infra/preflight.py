"""What the stack config asks of the AWS account, checked at preview before any resource exists.

`infra/config.py` knows the config but not the account: an instance type that the region does not
offer in the stack's zones (a typo in the system group, a GPU family that a zone lacks) and a vCPU
quota (GPU or standard) too small for a group's minimum both fail only when EKS creates the node
group, about 20 minutes into `pulumi up`; GPU quotas with no room for the nodes of the first
`hpaMinReplicas` pods fail it when `up` gives up waiting for the Deployment, 30 minutes later.
Here they fail the preview instead.

The lookups are synchronous invokes (the `aws.ec2.get_instance_type_offerings` form without
`_output` returns its result), made before any resource is registered: a refusal raises
`ConfigError` with nothing created or half-planned, exactly like a bad config value. An Output-based
check could only fail inside `apply`, after the components had already been registered. Invokes run
in `pulumi preview` as in `pulumi up`; they need `ec2:DescribeInstanceTypeOfferings`,
`ec2:DescribeInstanceTypes` and `servicequotas:GetServiceQuota` (all in the AWS-managed
ReadOnlyAccess policy).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from infra import gpu_spec
from infra.config import (
    GPU_INSTANCE_TYPES,
    NODE_OVERHEAD_CPU,
    NODE_OVERHEAD_MEMORY_GIB,
    PROJECT,
    ConfigError,
    NodeGroupConfig,
    StackConfig,
    _cpu,
    _gib,
)


@dataclass(frozen=True)
class QuotaKind:
    """An EC2 vCPU quota that GPU instances of some families count against."""

    code: str
    name: str
    families: tuple[str, ...]
    """Instance family prefixes it covers (`g` matches g4dn, g5, g6, g6e)."""
    capacity_type: str


_STANDARD: Final = ("a", "c", "d", "h", "i", "m", "r", "t", "z")
STANDARD_NAME: Final = "Standard (A, C, D, H, I, M, R, T, Z)"

# Service Quotas codes for EC2 (service code "ec2"). The names are those of the EC2 User Guide's
# "Spot Instance quotas" page (docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-limits.html:
# "All G and VT Spot Instance Requests", default 0); the codes are the ones public tooling reads
# with GetServiceQuota, e.g. cloudsnorkel/cloud-z collect-aws (spot L-3819A6DF G and VT,
# L-7212CCBC P, L-34B43A08 Standard) and the on-demand "Running On-Demand G and VT instances"
# L-DB2E81BA, "Running On-Demand P instances" L-417A185B and "Running On-Demand Standard ...
# instances" L-1216C47A. All are counted in vCPUs. The Standard ones matter for the system group:
# new accounts can start with only a few vCPUs there too. Of the codes, AWS's own documentation
# (the AWS CLI User Guide's Service Quotas examples, get-aws-default-service-quota) shows only
# L-1216C47A with its name and its vCPU usage metric; the G/VT and P codes are the ones
# `aws service-quotas list-service-quotas --service-code ec2` lists under those names, as the
# tooling above reads them: a code that ever stopped matching reads as unreadable (a warning).
QUOTAS: Final = (
    QuotaKind("L-3819A6DF", "All G and VT Spot Instance Requests", ("g", "vt"), "SPOT"),
    QuotaKind("L-DB2E81BA", "Running On-Demand G and VT instances", ("g", "vt"), "ON_DEMAND"),
    QuotaKind("L-7212CCBC", "All P Spot Instance Requests", ("p",), "SPOT"),
    QuotaKind("L-417A185B", "Running On-Demand P instances", ("p",), "ON_DEMAND"),
    QuotaKind("L-34B43A08", f"All {STANDARD_NAME} Spot Instance Requests", _STANDARD, "SPOT"),
    QuotaKind("L-1216C47A", f"Running On-Demand {STANDARD_NAME} instances", _STANDARD, "ON_DEMAND"),
)


def quota_kind(instance_type: str, capacity_type: str) -> QuotaKind | None:
    """The vCPU quota an instance of this type and capacity type counts against (None for the
    families no node group here uses: F, Inf, Trn, X, ...)."""
    family = instance_type.split(".", 1)[0]
    for kind in QUOTAS:
        if kind.capacity_type == capacity_type and any(
            family.startswith(prefix) and family[len(prefix) : len(prefix) + 1].isdigit()
            for prefix in kind.families
        ):
            return kind
    return None


def _gpu_groups(cfg: StackConfig) -> list[tuple[str, NodeGroupConfig]]:
    """Every GPU node group with the config key that declares it (as infra/config.py names it)."""
    return [(f"{PROJECT}:gpuNodeGroups[{g.name}]", g) for g in cfg.node_groups.gpu]


def _groups(cfg: StackConfig) -> list[tuple[str, NodeGroupConfig]]:
    """Every node group with the config key that declares it."""
    system = cfg.node_groups.system
    return [(f"{PROJECT}:systemNodeGroup[{system.name}]", system), *_gpu_groups(cfg)]


# --- Instance type offerings ----------------------------------------------------------------------


def offered_zones(instance_types: Iterable[str], locations: Iterable[str]) -> dict[str, set[str]]:
    """Zones per instance type from the data source's parallel lists (one entry per offering, as
    the provider's aws_ec2_instance_type_offerings appends them)."""
    zones: dict[str, set[str]] = defaultdict(set)
    for instance_type, zone in zip(instance_types, locations, strict=True):
        zones[instance_type].add(zone)
    return zones


def check_offerings(cfg: StackConfig, offered: Mapping[str, set[str]]) -> None:
    """Every instance type of every group must be offered in every zone of the stack.

    A managed node group spans every private subnet it is given (one per stack zone), and
    cluster-autoscaler plans a scale-up of a group from one node template for all of its zones. A
    type a zone does not offer can never run there, so the rule is deliberately strict: what a group
    lists is what each of its zones can run (drop the type or the zone). A type offered nowhere in
    the region is misspelt, retired or not in this region.
    """
    zones = cfg.network.availability_zones
    for key, group in _groups(cfg):
        for instance_type in group.instance_types:
            where = sorted(offered.get(instance_type, set()))
            missing = [z for z in zones if z not in where]
            if not missing:
                continue
            if where:
                allowed = (
                    f"an instance type offered in every zone of availabilityZones "
                    f"({', '.join(zones)}); {instance_type} is not offered in "
                    f"{', '.join(missing)} (AWS offers it in {', '.join(where)} of "
                    f"{cfg.region}): drop it from this group or change availabilityZones"
                )
            else:
                allowed = (
                    f"an EC2 instance type offered in {cfg.region}; AWS offers {instance_type} "
                    f"in none of its zones (misspelt, or not available in this region)"
                )
            raise ConfigError(cfg.stack_file, f"{key}.instanceTypes", instance_type, allowed)


def lookup_offerings(cfg: StackConfig) -> dict[str, set[str]]:
    """The region's zones of each configured instance type (`DescribeInstanceTypeOfferings`)."""
    types = sorted({t for _, group in _groups(cfg) for t in group.instance_types})
    result = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=types)],
    )
    return offered_zones(result.instance_types, result.locations)


# --- GPU vCPU quotas ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaNeed:
    kind: QuotaKind
    min_vcpus: int
    """What the groups' minSize keep running: must fit, or node group creation fails."""
    max_vcpus: int
    """What the groups reach at maxSize: above the quota, scale-ups stop short."""
    groups: tuple[str, ...]
    """Config keys of the groups counted."""


def quota_needs(cfg: StackConfig, vcpus_of: Callable[[str], int]) -> list[QuotaNeed]:
    """vCPUs per quota at the groups' minimum and maximum sizes, counting each node as the largest
    of its group's types (GPU groups share one shape; the system group may mix sizes)."""
    needs: dict[str, tuple[int, int, list[str]]] = {}
    kinds = {kind.code: kind for kind in QUOTAS}
    for key, group in _groups(cfg):
        kind = quota_kind(group.instance_types[0], group.capacity_type)
        if kind is None:
            continue
        vcpus = max(vcpus_of(t) for t in group.instance_types)
        low, high, keys = needs.get(kind.code, (0, 0, []))
        needs[kind.code] = (
            low + group.min_size * vcpus,
            high + group.max_size * vcpus,
            [*keys, key],
        )
    return [
        QuotaNeed(kinds[code], low, high, tuple(keys))
        for code, (low, high, keys) in sorted(needs.items())
    ]


def check_quota(cfg: StackConfig, need: QuotaNeed, value: float) -> str | None:
    """Raises when the minimum does not fit; returns a warning when the maximum does not."""
    kind = need.kind
    if value < need.min_vcpus:
        raise ConfigError(
            cfg.stack_file,
            f"{need.groups[0]}.minSize",
            need.min_vcpus,
            f"GPU vCPUs within the account's quota: {need.min_vcpus} vCPUs at the minimum size of "
            f"{', '.join(need.groups)} exceed {kind.name} ({kind.code}) = {value:g} vCPUs in "
            f"{cfg.region}; lower minSize or request an increase in the Service Quotas console",
        )
    if value < need.max_vcpus:
        return (
            f"{kind.name} ({kind.code}) is {value:g} vCPUs in {cfg.region}, but "
            f"{', '.join(need.groups)} reach {need.max_vcpus} vCPUs at maxSize: scale-ups stop "
            f"at the quota; request an increase or lower maxSize"
        )
    return None


def lookup_vcpus(instance_type: str) -> int:
    """vCPUs of an instance type: infra/config.py's GPU table, else EC2 DescribeInstanceTypes."""
    if instance_type in GPU_INSTANCE_TYPES:
        return GPU_INSTANCE_TYPES[instance_type].vcpus
    return int(aws.ec2.get_instance_type(instance_type=instance_type).default_vcpus)


def lookup_quota(kind: QuotaKind) -> float:
    result = aws.servicequotas.get_service_quota(service_code="ec2", quota_code=kind.code)
    return float(result.value)


# --- GPU nodes for the first replicas -------------------------------------------------------------
#
# Spot GPU groups start at minSize 0, but the Deployment starts hpaMinReplicas pods at once and
# `pulumi up` waits for them (infra/inference.py): each needs a GPU node that cluster-autoscaler
# adds. It tries the spot groups first and the on-demand groups when spot fails (the priority
# expander, infra/autoscaler.py); an Auto Scaling group whose launch exceeds a vCPU quota fails that
# scale-up, and the autoscaler moves on to the next group. A quota that leaves no room in any group
# for the first replicas is known at preview: otherwise `up` waits out the Deployment's timeout and
# fails with everything else created.


@dataclass(frozen=True)
class GpuGroupRoom:
    """A GPU group as the first replicas see it."""

    key: str
    group: NodeGroupConfig
    kind: QuotaKind
    vcpus: int
    """Of one node: what a new node counts against the quota."""
    pods_per_node: int


def pods_per_node(cfg: StackConfig, group: NodeGroupConfig) -> int:
    """Inference pods one node of a GPU group holds: its GPUs (each shared by
    timeSlicingReplicas pods) per pod's GPU request, as far as the node's CPU and memory after its
    own overhead allow the pods' requests (infra/config.py refuses requests above one node's)."""
    assert group.gpu is not None
    shape, inference = group.gpu, cfg.inference
    by_gpu = shape.gpus * cfg.gpu.time_slicing_replicas // gpu_spec.GPUS_PER_POD
    by_cpu = (shape.vcpus - NODE_OVERHEAD_CPU) // _cpu(inference.cpu_request)
    by_memory = (shape.memory_gib - NODE_OVERHEAD_MEMORY_GIB) // _gib(inference.memory_request)
    return int(min(by_gpu, by_cpu, by_memory))


def gpu_rooms(cfg: StackConfig, vcpus_of: Callable[[str], int]) -> list[GpuGroupRoom]:
    rooms = []
    for key, group in _gpu_groups(cfg):
        kind = quota_kind(group.instance_types[0], group.capacity_type)
        if kind is not None:
            vcpus = max(vcpus_of(t) for t in group.instance_types)
            rooms.append(GpuGroupRoom(key, group, kind, vcpus, pods_per_node(cfg, group)))
    return rooms


def fewest_vcpus(rooms: Sequence[GpuGroupRoom], wanted: int) -> list[float]:
    """For each pod count up to `wanted`, the fewest quota vCPUs of new nodes (above minSize, up
    to maxSize) of these groups that hold that many pods (inf: more than maxSize allows). Groups
    differ in node size and pods per node, so this is a small knapsack."""
    fewest = [0.0] + [math.inf] * wanted
    for room in rooms:
        useful = math.ceil(wanted / room.pods_per_node) if room.pods_per_node else 0
        for _ in range(min(room.group.max_size - room.group.min_size, useful)):
            for pods in range(wanted, -1, -1):
                more = min(wanted, pods + room.pods_per_node)
                fewest[more] = min(fewest[more], fewest[pods] + room.vcpus)
    return fewest


@dataclass(frozen=True)
class QuotaRoom:
    """What one quota leaves for the first replicas' new nodes."""

    kind: QuotaKind
    value: float | None
    """None: unreadable."""
    kept: int
    """vCPUs the groups' minSize nodes already count against it."""
    rooms: tuple[GpuGroupRoom, ...]

    def pods(self, wanted: int) -> int:
        """Pods, up to `wanted`, its groups' new nodes hold within the quota (0 when it is
        unknown)."""
        if self.value is None:
            return 0
        free = self.value - self.kept
        return max(
            pods for pods, vcpus in enumerate(fewest_vcpus(self.rooms, wanted)) if vcpus <= free
        )

    def describe(self, wanted: int, region: str) -> str:
        """The quota code, value and what the pods would need of it."""
        need = fewest_vcpus(self.rooms, wanted)[wanted]
        groups = ", ".join(
            f"{r.key}: {r.vcpus} vCPUs and {r.pods_per_node} pod(s) per node, up to "
            f"{r.group.max_size - r.group.min_size} nodes above minSize"
            for r in self.rooms
        )
        value = "unreadable" if self.value is None else f"{self.value:g} vCPUs"
        needs = (
            f"{need:g} vCPUs of new nodes for {wanted} pod(s)"
            if need < math.inf
            else f"more nodes than maxSize allows for {wanted} pod(s)"
        )
        return (
            f"{self.kind.code} ({self.kind.name}) = {value} in {region}, {self.kept} of them kept "
            f"by minSize; its groups need {needs} ({groups})"
        )


def quota_rooms(
    cfg: StackConfig,
    needs: Sequence[QuotaNeed],
    values: Mapping[str, float | None],
    vcpus_of: Callable[[str], int],
) -> list[QuotaRoom]:
    kept = {need.kind.code: need.min_vcpus for need in needs}
    by_code: dict[str, list[GpuGroupRoom]] = defaultdict(list)
    for room in gpu_rooms(cfg, vcpus_of):
        by_code[room.kind.code].append(room)
    return [
        QuotaRoom(rooms[0].kind, values.get(code), kept.get(code, 0), tuple(rooms))
        for code, rooms in sorted(by_code.items())
    ]


@dataclass(frozen=True)
class Placement:
    """Where `wanted` GPU pods would run: on the minSize nodes, then on new nodes the quotas
    allow, spot first (the priority expander, infra/autoscaler.py), then on-demand."""

    wanted: int
    hosted: int
    """Pods the GPU groups' minSize nodes hold."""
    on_spot: int
    """Of the rest, pods new spot nodes can hold within their quotas."""
    in_all: int
    """Of the rest, pods new spot and on-demand nodes can hold within their quotas."""
    unreadable: bool
    details: str

    @property
    def missing(self) -> int:
        return max(0, self.wanted - self.hosted)


def placement(
    cfg: StackConfig,
    needs: Sequence[QuotaNeed],
    values: Mapping[str, float | None],
    vcpus_of: Callable[[str], int],
    wanted: int,
) -> Placement:
    rooms = quota_rooms(cfg, needs, values, vcpus_of)
    hosted = sum(r.group.min_size * r.pods_per_node for q in rooms for r in q.rooms)
    missing = max(0, wanted - hosted)
    on_spot = sum(q.pods(missing) for q in rooms if q.kind.capacity_type == "SPOT")
    on_demand = [q for q in rooms if q.kind.capacity_type == "ON_DEMAND"]
    details = "; ".join(q.describe(missing, cfg.region) for q in rooms)
    if not on_demand:
        details += "; no ON_DEMAND GPU group to fall back on"
    return Placement(
        wanted,
        hosted,
        on_spot,
        on_spot + sum(q.pods(missing) for q in on_demand),
        any(q.value is None for q in rooms),
        details,
    )


def check_replicas(
    cfg: StackConfig,
    needs: Sequence[QuotaNeed],
    values: Mapping[str, float | None],
    vcpus_of: Callable[[str], int],
) -> tuple[str, str | None]:
    """Whether the GPU groups can run hpaMinReplicas pods within the quotas: on their minSize
    nodes, then on new spot nodes, then on the on-demand fallback. Raises when none can; returns
    the report line and a warning (the fallback is needed, or an unreadable quota left it
    unproven)."""
    wanted = cfg.inference.hpa_min_replicas
    room = placement(cfg, needs, values, vcpus_of, wanted)
    hosted, missing, in_all = room.hosted, room.missing, room.in_all
    head = f"hpaMinReplicas = {wanted}: the GPU groups' minSize nodes hold {hosted} inference pods"
    if missing == 0:
        return head, None
    line = f"{head}, new nodes must hold {missing} more; {room.details}"
    if room.on_spot >= missing:
        return line, None
    if in_all >= missing:
        return line, (
            f"the spot GPU quota leaves room for {room.on_spot} of the {missing} inference pods "
            f"hpaMinReplicas = {wanted} needs beyond minSize: the rest start on on-demand nodes "
            f"(the fallback, at the on-demand price) until the spot quota is raised"
        )
    if room.unreadable:
        return line, (
            f"could not prove that the GPU quotas leave room for the {missing} inference pods "
            f"hpaMinReplicas = {wanted} needs beyond minSize (a quota was unreadable: grant "
            f"servicequotas:GetServiceQuota to see it checked here)"
        )
    raise ConfigError(
        cfg.stack_file,
        f"{PROJECT}:hpaMinReplicas",
        wanted,
        f"as many replicas as the GPU quotas can start, on spot or on the on-demand fallback: "
        f"{hosted} fit on the groups' minSize nodes, {missing} more need new nodes and the "
        f"quotas leave room for {in_all}: {room.details}; request an increase in the Service "
        f"Quotas console, add a group the quota allows, or lower hpaMinReplicas",
    )


def check_headroom(
    cfg: StackConfig,
    needs: Sequence[QuotaNeed],
    values: Mapping[str, float | None],
    vcpus_of: Callable[[str], int],
) -> tuple[str, str | None] | None:
    """Whether the quotas also hold the gpuHeadroom placeholders (infra/headroom.py) next to the
    hpaMinReplicas pods. Never a stop: a placeholder that cannot start only keeps no GPU warm, and
    nothing else waits for it (`pulumi up` skips awaiting them). The warning says how many stay
    Pending (and alert as GPUHeadroomPending, infra/alerts.py) while the cost still counts them.
    None without headroom."""
    headroom = cfg.capacity.gpu_headroom
    if headroom == 0:
        return None
    replicas = cfg.inference.hpa_min_replicas
    room = placement(cfg, needs, values, vcpus_of, replicas + headroom)
    missing = room.missing
    head = (
        f"gpuHeadroom = {headroom}: with hpaMinReplicas = {replicas}, {room.wanted} GPU pods; "
        f"the GPU groups' minSize nodes hold {room.hosted}"
    )
    if missing == 0:
        return head, None
    line = f"{head}, new nodes must hold {missing} more; {room.details}"
    if room.on_spot >= missing:
        return line, None
    if room.in_all >= missing:
        return line, (
            f"the spot GPU quota leaves room for {room.on_spot} of the {missing} pods that "
            f"hpaMinReplicas = {replicas} and gpuHeadroom = {headroom} need beyond minSize: the "
            f"rest of the warm placeholders run on on-demand nodes (the fallback, at the "
            f"on-demand price) until the spot quota is raised"
        )
    if room.unreadable:
        return line, (
            f"could not prove that the GPU quotas leave room for the gpuHeadroom = {headroom} "
            f"placeholders (a quota was unreadable: grant servicequotas:GetServiceQuota to see "
            f"it checked here)"
        )
    pending = min(headroom, missing - room.in_all)
    return line, (
        f"gpuHeadroom = {headroom} does not fit the GPU quotas: beside the hpaMinReplicas = "
        f"{replicas} pods they leave room for {room.in_all} of the {missing} pods that need new "
        f"nodes, so {pending} placeholder(s) stay Pending (alert GPUHeadroomPending), keep no GPU "
        f"warm, and are still counted in the cost floor; request an increase in the Service "
        f"Quotas console or lower gpuHeadroom ({room.details})"
    )


# --- Entry point ----------------------------------------------------------------------------------


def check(cfg: StackConfig) -> list[str]:
    """Runs every account check; raises ConfigError on the first refusal. Returns the report lines
    it also logged (the quotas as read), which the preview shows as diagnostics."""
    check_offerings(cfg, lookup_offerings(cfg))
    report = []

    def warn(line: str) -> None:
        pulumi.log.warn(line)
        report.append(line)

    needs = quota_needs(cfg, lookup_vcpus)
    values: dict[str, float | None] = {}
    for need in needs:
        try:
            values[need.kind.code] = value = lookup_quota(need.kind)
        # Any failure (most often a role without servicequotas:GetServiceQuota) is reported, not
        # fatal: the quota only informs the preview.
        except Exception as error:
            values[need.kind.code] = None
            warn(
                f"could not read {need.kind.name} ({need.kind.code}): {error}; the groups need "
                f"{need.min_vcpus}-{need.max_vcpus} vCPUs (grant servicequotas:GetServiceQuota "
                f"to see it checked here)"
            )
            continue
        warning = check_quota(cfg, need, value)
        line = (
            f"{need.kind.name} ({need.kind.code}): {value:g} vCPUs; "
            f"{', '.join(need.groups)} need {need.min_vcpus} at minSize, "
            f"{need.max_vcpus} at maxSize"
        )
        report.append(line)
        pulumi.log.info(line)
        if warning is not None:
            warn(warning)
    for checked in (
        check_replicas(cfg, needs, values, lookup_vcpus),
        check_headroom(cfg, needs, values, lookup_vcpus),
    ):
        if checked is None:
            continue
        line, warning = checked
        report.append(line)
        pulumi.log.info(line)
        if warning is not None:
            warn(warning)
    return report
