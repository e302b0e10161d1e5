"""Runs the Pulumi program (or any function that builds resources) under Pulumi's mock engine.

The Pulumi CLI and provider plugins cannot run offline, so tests and the synth run the real program
the way Pulumi documents for unit tests (`pulumi.runtime.set_mocks`) and record every registered
resource. The mocks answer like AWS would (ids, ARNs, the EKS endpoint, CA data and OIDC issuer) so
that everything computed from outputs (kubeconfig, policies, ASG tags) is exercised too. The run is
a preview: values the mocks do not produce stay unknown, as in `pulumi preview`.

Each chart resource is rendered from its pinned archive (rehearsal/charts.py) as it is registered.
A `helm.v4.Chart`'s objects are recorded as the provider registers them: one resource each, child
of the chart, named `<chart>:<namespace>/<name>`. A `helm.v3.Release`'s objects are kept with its
render only (Helm creates them; the engine sees the release).

Stack config is read from `Pulumi.yaml` (defaults) and `Pulumi.<stack>.yaml`, passed as the CLI
passes it (strings; lists and objects as JSON). Secure values cannot be decrypted offline; they
become placeholders that stay marked secret."""

from __future__ import annotations

import asyncio
import atexit
import base64
import hashlib
import json
import runpy
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pulumi
import yaml
from pulumi.output import Unknown
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.config import GPU_INSTANCE_TYPES, StackConfig, parse
from rehearsal import charts, pricelist

ROOT: Final = Path(__file__).resolve().parent.parent
PROGRAM: Final = ROOT / "infra" / "__main__.py"
PROJECT: Final = "gpu-inference"
ACCOUNT: Final = "123456789012"
UNKNOWN: Final = "<computed>"
"""How values unknown at preview time appear in an Inventory."""

CHART_V4: Final = "kubernetes:helm.sh/v4:Chart"
RELEASE_V3: Final = "kubernetes:helm.sh/v3:Release"
HELM_TYPES: Final = (CHART_V4, RELEASE_V3)
CLUSTER_SCOPED_KINDS: Final = frozenset(
    {
        "APIService",
        "CSIDriver",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    }
)
"""Kinds the provider leaves without a namespace when it applies a chart's default namespace."""


@dataclass(frozen=True)
class Secret:
    """A secret value as the engine saw it; the synth prints it masked."""

    value: Any

    def __repr__(self) -> str:
        return "Secret(***)"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    """As the engine received them: Kubernetes fields camelCased, integral floats back to ints,
    secrets as `Secret`, unknown values as `UNKNOWN`."""
    provider: str | None
    """URN of the explicit provider (None: the default provider)."""
    parent: str | None
    depends_on: tuple[str, ...] = ()
    """URNs of explicit dependencies (depends_on, expanded to a component's children)."""
    ignore_changes: tuple[str, ...] = ()
    rendered_by: str | None = None
    """URN of the `helm.v4.Chart` whose render registered this object (None: the program did)."""

    @property
    def is_kubernetes_object(self) -> bool:
        return (
            self.type.startswith("kubernetes:")
            and self.type not in HELM_TYPES
            and "apiVersion" in self.inputs
            and "kind" in self.inputs
        )


@dataclass(frozen=True)
class ChartRender:
    """One chart resource of the program, rendered as the provider (v4) or Helm (v3) would."""

    resource: Resource
    source: charts.ChartSource
    rendered: charts.Rendered
    registered: bool
    """True for helm.v4.Chart: each object is a Pulumi resource (previewed, policy-checked). False
    for helm.v3.Release: Helm creates the objects; the engine sees only the release."""
    unknown_values: tuple[str, ...] = ()
    """Values unknown at preview: the real provider renders nothing until they are known."""


@dataclass(frozen=True)
class Inventory:
    resources: tuple[Resource, ...]
    outputs: dict[str, Any]
    rendered: tuple[ChartRender, ...] = ()
    """Every chart resource's render, in URN order."""
    invokes: tuple[str, ...] = ()
    """The token of every invoke (data source) the program made, sorted."""
    invoke_counts: Mapping[str, int] = field(default_factory=dict)
    """How many times the program made each invoke."""
    config: dict[str, Any] = field(default_factory=dict)
    """The config the program ran with (full keys, values as the CLI hands them; secret ones as
    `Secret`)."""

    def of_type(self, type_: str) -> list[Resource]:
        """The resources of a type the program declares (objects a chart renders are in
        chart_resources())."""
        return [r for r in self.resources if r.type == type_ and r.rendered_by is None]

    def one(self, type_: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) == 1:
            return found[0]
        names = [r.name for r in self.of_type(type_)]
        what = f"{type_} named {name!r}" if name else type_
        raise LookupError(f"expected exactly one {what}, found {len(found)}; {type_}: {names}")

    def by_urn(self, urn: str) -> Resource:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise LookupError(f"no resource with URN {urn}")

    def children(self, parent: Resource) -> list[Resource]:
        return [r for r in self.resources if r.parent == parent.urn]

    def dependencies(self, resource: Resource) -> set[str]:
        """URNs of everything `resource` depends on, transitively: its dependencies and parent, and
        theirs. The engine creates all of them before it and deletes all of them after it (it
        schedules by DependenciesOf: provider, parent, dependencies; pulumi/pulumi
        pkg/resource/graph/dependency_graph.go). A component in `depends_on` counts with its
        children."""
        by_urn = {r.urn: r for r in self.resources}
        seen: set[str] = set()
        pending = [resource]
        while pending:
            current = pending.pop()
            for urn in (*current.depends_on, *([current.parent] if current.parent else [])):
                if urn in seen:
                    continue
                seen.add(urn)
                if urn in by_urn:
                    pending.append(by_urn[urn])
                    pending.extend(r for r in self.resources if r.parent == urn)
        return seen

    def k8s_resources(self) -> list[Resource]:
        """The Kubernetes objects the program declares itself (chart renders excluded)."""
        return [r for r in self.resources if r.is_kubernetes_object and r.rendered_by is None]

    def k8s_manifests(self) -> list[dict[str, Any]]:
        """Every native Kubernetes object the program declares, as applied (apiVersion, kind,
        metadata first)."""
        return [manifest(r) for r in self.k8s_resources()]

    def chart_resources(self) -> list[Resource]:
        """The objects `helm.v4.Chart` resources register, one Pulumi resource each."""
        return [r for r in self.resources if r.rendered_by is not None]

    def cluster_objects(self) -> list[dict[str, Any]]:
        """Every object the cluster gets: the program's, each chart's (v4 and v3 alike)."""
        objects = self.k8s_manifests()
        for render in self.rendered:
            objects += [dict(o) for o in render.rendered.objects]
        return objects

    def render_of(self, chart: str) -> ChartRender:
        """The render of the chart resource installing `chart` (the upstream chart name)."""
        found = [r for r in self.rendered if r.source.chart == chart]
        if len(found) != 1:
            raise LookupError(
                f"expected one render of chart {chart}, found {len(found)}; rendered: "
                f"{[r.source.chart for r in self.rendered]}"
            )
        return found[0]

    def charts(self) -> list[Resource]:
        return [r for r in self.resources if r.type in HELM_TYPES]


def manifest(resource: Resource) -> dict[str, Any]:
    inputs = dict(resource.inputs)
    head: dict[str, Any] = {}
    for key in ("apiVersion", "kind", "metadata"):
        if key in inputs:
            head[key] = inputs.pop(key)
    return {**head, **dict(sorted(inputs.items()))}


# --- Mocks ---------------------------------------------------------------------------------------


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def _uuid(seed: str) -> str:
    h = _hex(seed, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_EC2_ID_PREFIX: Final = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "sg",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
}


_INVOKE_LOOPS: set[asyncio.AbstractEventLoop] = set()
"""Event loops the SDK's mock monitor made in the worker threads that run invokes."""


@atexit.register
def _close_invoke_loops() -> None:
    """Closes the invoke threads' event loops when the process ends. Left to the garbage
    collector after a run that raised, they print "Exception ignored in BaseEventLoop.__del__".
    Never between runs: the threads and their loops are reused."""
    for loop in _INVOKE_LOOPS:
        if not loop.is_running() and not loop.is_closed():
            loop.close()
    _INVOKE_LOOPS.clear()


# --- The account the mocks pretend to be ----------------------------------------------------------

_STANDARD_TYPES: Final = tuple(
    f"{family}.{size}"
    for family in ("t3", "t3a", "m5", "m6i", "m6a", "m7i", "c6i", "r6i")
    for size in ("large", "xlarge", "2xlarge", "4xlarge")
)
GPU_LESS_ZONE: Final = "d"
"""The suffix of the one zone per region where the mock account offers no GPU instance types."""


def instance_type_offerings(region: str) -> dict[str, frozenset[str]]:
    """An invented offering table shaped like DescribeInstanceTypeOfferings' answer: zones a-d of
    every region; a, b and c offer every GPU type of infra/config.py and common general-purpose
    types, zone d only the general-purpose ones (so tests have a zone a GPU type is missing from).
    Real regions differ zone by zone; that is why `infra/preflight.py` asks."""
    gpu = frozenset(GPU_INSTANCE_TYPES)
    standard = frozenset(_STANDARD_TYPES)
    return {
        f"{region}{zone}": standard if zone == GPU_LESS_ZONE else standard | gpu for zone in "abcd"
    }


DEFAULT_QUOTAS: Final = {
    "L-3819A6DF": 256.0,
    "L-DB2E81BA": 64.0,
    "L-7212CCBC": 0.0,
    "L-417A185B": 0.0,
    "L-34B43A08": 64.0,
    "L-1216C47A": 64.0,
}
"""vCPU quotas (Service Quotas codes) of an established account: room for the committed stacks'
G-family and system groups, none for P instances (new accounts start at 0 for all GPU ones)."""
_VCPUS_BY_SIZE: Final = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
"""vCPUs of the general-purpose types the mock account offers (every family here doubles per
size from 2 at large)."""


EKS_FIXTURE: Final = ROOT / "rehearsal" / "fixtures" / "eks.json"
"""EKS's version calendar and default add-on versions as the mock account answers them."""


def eks_fixture() -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(EKS_FIXTURE.read_text())
    return fixture


def calendar_with(minor: str, status: str) -> tuple[Mapping[str, Any], ...]:
    """The fixture's EKS calendar with one minor moved to another status (time passing), for
    `MockAccount(cluster_versions=...)`."""
    return tuple(
        {**row, "versionStatus": status} if row["clusterVersion"] == minor else row
        for row in eks_fixture()["clusterVersions"]
    )


@dataclass(frozen=True)
class MockAccount:
    """What the account's invokes answer; tests replace parts of it."""

    offerings: Mapping[str, frozenset[str]] | None = None
    """Instance types per availability zone (default: `instance_type_offerings(region)`)."""
    quotas: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    """Service Quotas values by quota code; a code not here is an access-denied error."""
    cluster_versions: Sequence[Mapping[str, Any]] = field(
        default_factory=lambda: tuple(eks_fixture()["clusterVersions"])
    )
    """EKS DescribeClusterVersions rows (default: the fixture's)."""
    addon_versions: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: eks_fixture()["addonVersions"]
    )
    """The default version of each managed add-on, per Kubernetes minor."""
    denied: frozenset[str] = frozenset()
    """IAM actions the caller lacks (e.g. `pricing:GetProducts`): their invokes fail as AWS
    refuses them."""
    s3_gateway_vpcs: frozenset[str] = frozenset()
    """Existing VPCs that route S3 through a gateway endpoint."""
    spot_factors: Mapping[str, float] = field(default_factory=dict)
    """Spot prices of some instance types against the fixture's (they move between any two
    previews); 1 for the others."""


PRICE_LIST_ENDPOINTS: Final = frozenset(
    {"us-east-1", "eu-central-1", "ap-south-1", "cn-northwest-1"}
)
"""Where the mock's Price List Query API answers (api.pricing.<region>.amazonaws.com); any other
region has no such host."""


class AwsLikeMocks(pulumi.runtime.Mocks):
    """Answers registrations and invokes the way AWS and Kubernetes would, deterministically."""

    def __init__(
        self,
        region: str,
        caller_arn: str = f"arn:aws:iam::{ACCOUNT}:user/ci",
        account: MockAccount | None = None,
    ) -> None:
        self.region = region
        self.caller_arn = caller_arn
        self.account = account or MockAccount()
        self.offerings = self.account.offerings or instance_type_offerings(region)
        self.provider_regions: dict[str, str] = {}
        """Region of every explicit AWS provider, by the id its references carry."""
        self.invokes: set[str] = set()
        """Tokens of the invokes answered (rehearsal/permissions.py maps them to IAM actions)."""
        self.invoke_counts: Counter[str] = Counter()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = dict(args.inputs)
        type_, name = args.typ, args.name
        seed = f"{type_}::{name}"
        outputs: dict[str, Any] = dict(inputs)
        resource_id = f"{name}-{_hex(seed, 8)}"

        if type_ == "pulumi:providers:aws":
            self.provider_regions[resource_id] = str(inputs.get("region") or self.region)
        if type_ in _EC2_ID_PREFIX:
            resource_id = f"{_EC2_ID_PREFIX[type_]}-{_hex(seed, 17)}"
            outputs["arn"] = (
                f"arn:aws:ec2:{self.region}:{ACCOUNT}:{type_.split(':')[-1]}/{resource_id}"
            )
        if type_ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs.update(latestVersion=1, defaultVersion=1)
        elif type_ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = f"198.18.{int(_hex(seed, 2), 16)}.{int(_hex(seed + 'b', 2), 16)}"
        elif type_ == "aws:ec2/vpc:Vpc":
            outputs["defaultSecurityGroupId"] = f"sg-{_hex(seed + 'sg', 17)}"
        elif type_ == "aws:iam/role:Role":
            role = inputs.get("name") or f"{name}-{_hex(seed, 7)}"
            resource_id = role
            outputs.update(
                name=role, arn=f"arn:aws:iam::{ACCOUNT}:role/{role}", uniqueId=_hex(seed, 21)
            )
        elif type_ == "aws:iam/policy:Policy":
            policy = inputs.get("name") or f"{name}-{_hex(seed, 7)}"
            resource_id = f"arn:aws:iam::{ACCOUNT}:policy/{policy}"
            outputs.update(name=policy, arn=resource_id)
        elif type_ == "aws:ecr/repository:Repository":
            repo = inputs.get("name") or name
            outputs.update(
                registryId=ACCOUNT,
                repositoryUrl=f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{repo}",
                arn=f"arn:aws:ecr:{self.region}:{ACCOUNT}:repository/{repo}",
            )
        elif type_ == "docker-build:index:Image":
            # The digest of what was built: deterministic in the build's inputs, as a real build is
            # in its context.
            built = {k: inputs.get(k) for k in ("buildArgs", "platforms", "tags")}
            digest = hashlib.sha256(json.dumps(built, sort_keys=True, default=str).encode())
            outputs["digest"] = f"sha256:{digest.hexdigest()}"
        elif type_ == "random:index/randomPassword:RandomPassword":
            # Known (not <computed>) so the Secret that holds it validates as a map of strings; the
            # SDK marks `result` secret, so it is masked wherever it appears.
            outputs["result"] = _hex(seed, min(64, int(inputs.get("length", 16))))
        elif type_ == "aws:kms/key:Key":
            resource_id = _uuid(seed)
            outputs.update(
                keyId=resource_id, arn=f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{resource_id}"
            )
        elif type_ == "aws:eks/cluster:Cluster":
            outputs.update(self._eks_cluster(inputs, name, seed))
            resource_id = outputs["name"]
        elif type_ == "aws:eks/nodeGroup:NodeGroup":
            cluster, group = inputs.get("clusterName", "cluster"), inputs.get("nodeGroupName", name)
            resource_id = f"{cluster}:{group}"
            asg = f"eks-{group}-{_uuid(seed)}"
            outputs.update(
                arn=f"arn:aws:eks:{self.region}:{ACCOUNT}:nodegroup/{cluster}/{group}/{_uuid(seed)}",
                status="ACTIVE",
                resources=[
                    {"autoscalingGroups": [{"name": asg}], "remoteAccessSecurityGroupId": ""}
                ],
            )
        elif type_.startswith("aws:eks/"):
            outputs.setdefault(
                "arn", f"arn:aws:eks:{self.region}:{ACCOUNT}:{type_.split(':')[-1].lower()}/{name}"
            )
        elif type_.startswith("kubernetes:") and isinstance(inputs.get("metadata"), dict):
            meta = inputs["metadata"]
            resource_id = "/".join(p for p in (meta.get("namespace"), meta.get("name", name)) if p)
            # The API server gives every object a uid at creation (a replacement gets a new one).
            outputs["metadata"] = {**meta, "uid": _uuid(seed)}
            if type_ == "kubernetes:core/v1:Service" and inputs.get("spec", {}).get("type") == (
                "LoadBalancer"
            ):
                # What the AWS Load Balancer Controller writes back once the NLB exists.
                host = f"k8s-{resource_id.replace('/', '-')[:24]}-{_hex(seed, 10)}"
                outputs["status"] = {
                    "loadBalancer": {
                        "ingress": [{"hostname": f"{host}.elb.{self.region}.amazonaws.com"}]
                    }
                }
        elif type_.startswith("aws:"):
            outputs.setdefault(
                "arn", f"arn:aws:{type_.split(':')[1].split('/')[0]}:{self.region}:{ACCOUNT}:{name}"
            )
        return resource_id, outputs

    def _eks_cluster(self, inputs: dict, name: str, seed: str) -> dict[str, Any]:
        cluster = inputs.get("name") or name
        ident = _hex(seed, 32).upper()
        vpc_config = dict(inputs.get("vpcConfig") or {})
        vpc_config.update(
            clusterSecurityGroupId=f"sg-{_hex(seed + 'cluster-sg', 17)}",
            vpcId=f"vpc-{_hex(seed, 17)}",
        )
        ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMOCK\n-----END CERTIFICATE-----\n")
        return {
            "name": cluster,
            "arn": f"arn:aws:eks:{self.region}:{ACCOUNT}:cluster/{cluster}",
            "endpoint": f"https://{ident}.gr7.{self.region}.eks.amazonaws.com",
            "certificateAuthority": {"data": ca.decode()},
            "identities": [
                {"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/{ident}"}]}
            ],
            "vpcConfig": vpc_config,
            "platformVersion": "eks.1",
            "status": "ACTIVE",
        }

    def call(  # type: ignore[override]
        self, args: pulumi.runtime.MockCallArgs
    ) -> dict | tuple[dict, list[tuple[str, str]]]:
        token, a = args.token, dict(args.args)
        self.invokes.add(token)
        self.invoke_counts[token] += 1
        if threading.current_thread() is not threading.main_thread():
            # The mock monitor has just made (or reused) this worker thread's loop
            # (pulumi.runtime.mocks MockMonitor.Invoke calls _ensure_event_loop).
            _INVOKE_LOOPS.add(asyncio.get_event_loop())
        if token == "aws:eks/getAddonVersion:getAddonVersion":
            return self._addon_version(a)
        if token == "aws:eks/getClusterVersions:getClusterVersions":
            return self._cluster_versions(a)
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": self.caller_arn,
                "userId": "AIDAMOCK",
                "id": ACCOUNT,
            }
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            registry = f"{a.get('registryId') or ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com"
            return {
                **a,
                "authorizationToken": base64.b64encode(b"AWS:mock-ecr-password").decode(),
                "proxyEndpoint": f"https://{registry}",
                "userName": "AWS",
                "password": "mock-ecr-password",
                "expiresAt": "2030-01-01T00:00:00Z",
                "id": registry,
            }
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            return self._offerings(a)
        if token == "aws:servicequotas/getServiceQuota:getServiceQuota":
            return self._quota(a)
        if token == "aws:ec2/getInstanceType:getInstanceType":
            instance_type = str(a.get("instanceType"))
            if instance_type not in _STANDARD_TYPES:
                reason = f"InvalidInstanceType: {instance_type} is not in the mock account"
                return {}, [("instanceType", reason)]
            size = instance_type.split(".", 1)[1]
            return {**a, "id": instance_type, "defaultVcpus": _VCPUS_BY_SIZE[size]}
        if token == "aws:ec2/getVpc:getVpc":
            return {**a, "cidrBlock": "10.0.0.0/16", "arn": f"arn:aws:ec2:::vpc/{a.get('id')}"}
        if token == "aws:ec2/getVpcEndpoint:getVpcEndpoint":
            return self._vpc_endpoint(a)
        if token == "aws:ec2/getSpotPrice:getSpotPrice":
            return self._spot_price(a)
        if token == "aws:pricing/getProduct:getProduct":
            return self._product(a, self._invoke_region(args.provider))
        raise NotImplementedError(
            f"the mock engine does not answer the invoke {token}: add it to mocks"
        )

    def _offerings(self, a: dict) -> dict[str, Any]:
        if a.get("locationType") != "availability-zone":
            raise NotImplementedError("the mock account answers offerings per availability zone")
        wanted: set[str] | None = None
        for item in a.get("filters") or []:
            if item.get("name") != "instance-type":
                raise NotImplementedError(f"offerings filter {item.get('name')!r} is not mocked")
            wanted = set(item.get("values") or [])
        pairs = sorted(
            (instance_type, zone)
            for zone, types in self.offerings.items()
            for instance_type in types
            if wanted is None or instance_type in wanted
        )
        return {
            **a,
            "id": self.region,
            "instanceTypes": [t for t, _ in pairs],
            "locations": [z for _, z in pairs],
            "locationTypes": ["availability-zone"] * len(pairs),
        }

    def _addon_version(self, a: dict) -> dict[str, Any] | tuple[dict, list[tuple[str, str]]]:
        """The default version of an add-on for the Kubernetes minor asked for, as AWS derives it
        from the cluster's version; a minor the account does not know is an error, as at AWS."""
        minor, addon = str(a.get("kubernetesVersion")), str(a.get("addonName"))
        version = self.account.addon_versions.get(minor, {}).get(addon)
        if version is None:
            reason = f"ResourceNotFoundException: no {addon} version for Kubernetes {minor}"
            return {}, [("kubernetesVersion", reason)]
        return {**a, "id": addon, "version": version}

    def _cluster_versions(self, a: dict) -> dict[str, Any] | tuple[dict, list[tuple[str, str]]]:
        """DescribeClusterVersions through the aws_eks_cluster_versions data source, with the
        arguments it passes on (infra/kubernetes_support.py cites its source): `clusterType`
        filters by type, `defaultOnly` keeps the default minor, `versionStatus` one status, and
        without `includeAll` EKS leaves out the minors it no longer supports. The data source
        never passes `cluster_versions_only` on, so neither is it applied here."""
        refused = self._refused("eks:DescribeClusterVersions", "clusterType")
        if refused is not None:
            return refused
        wanted_type, status = a.get("clusterType"), a.get("versionStatus")
        rows = [
            {
                "clusterType": "eks",
                "controlPlaneComponentConfigs": [],
                "controlPlaneScalingTiers": [],
                **row,
            }
            for row in self.account.cluster_versions
        ]
        rows = [
            row
            for row in rows
            if (wanted_type is None or row["clusterType"] == wanted_type)
            and (a.get("includeAll") or row["versionStatus"] != "UNSUPPORTED")
            and (not a.get("defaultOnly") or row.get("defaultVersion"))
            and (status is None or row["versionStatus"] == status)
        ]
        return {**a, "id": self.region, "region": self.region, "clusterVersions": rows}

    def _invoke_region(self, provider_ref: str | None) -> str:
        """The region an invoke runs in: its explicit provider's, else the stack's."""
        if not provider_ref:
            return self.region
        return self.provider_regions.get(provider_ref.rsplit("::", 1)[-1], self.region)

    def _refused(self, action: str, argument: str) -> tuple[dict, list[tuple[str, str]]] | None:
        if action not in self.account.denied:
            return None
        reason = (
            f"AccessDeniedException: User: {self.caller_arn} is not authorized to perform: {action}"
        )
        return {}, [(argument, reason)]

    def _spot_price(self, a: dict) -> dict[str, Any] | tuple[dict, list[tuple[str, str]]]:
        """The aws_ec2_spot_price data source: DescribeSpotPriceHistory from now, and exactly one
        price must come back (terraform-provider-aws ec2_spot_price_data_source.go), which takes
        a type, a zone and one product description."""
        refused = self._refused("ec2:DescribeSpotPriceHistory", "instanceType")
        if refused is not None:
            return refused
        descriptions = [
            v
            for f in a.get("filters") or []
            if f.get("name") == "product-description"
            for v in f.get("values") or []
        ]
        instance_type, zone = a.get("instanceType"), a.get("availabilityZone")
        if not instance_type or not zone or len(descriptions) != 1:
            reason = "multiple EC2 Spot Price History results found matching criteria"
            return {}, [("instanceType", reason)]
        price = pricelist.spot_price(str(instance_type), str(zone))
        if price is not None:
            price = round(price * self.account.spot_factors.get(str(instance_type), 1.0), 4)
        if (
            price is None
            or descriptions[0] != pricelist.PRODUCT_DESCRIPTION
            or instance_type not in self.offerings.get(str(zone), frozenset())
        ):
            reason = "no EC2 Spot Price History found matching criteria; try different search"
            return {}, [("instanceType", reason)]
        return {
            **a,
            "id": self.region,
            "region": self.region,
            "spotPrice": f"{price:.6f}",
            "spotPriceTimestamp": pricelist.SPOT_TIMESTAMP,
        }

    def _product(self, a: dict, region: str) -> dict[str, Any] | tuple[dict, list[tuple[str, str]]]:
        """The aws_pricing_product data source: TERM_MATCH filters that must select exactly one
        product (terraform-provider-aws pricing/product_data_source.go), served only where the
        Price List Query API has an endpoint."""
        if region not in PRICE_LIST_ENDPOINTS:
            reason = (
                f"reading Pricing Products: dial tcp: lookup api.pricing.{region}.amazonaws.com: "
                f"no such host"
            )
            return {}, [("serviceCode", reason)]
        refused = self._refused("pricing:GetProducts", "serviceCode")
        if refused is not None:
            return refused
        filters = {str(f["field"]): str(f["value"]) for f in a.get("filters") or []}
        priced = filters.get("regionCode", "")
        found = pricelist.matching(priced, str(a.get("serviceCode")), filters)
        if len(found) != 1:
            reason = (
                "Pricing product query did not return any elements"
                if not found
                else f"Pricing product query not precise enough. Returned {len(found)} elements"
            )
            return {}, [("filters", reason)]
        return {**a, "id": found[0]["sku"], "result": pricelist.document(found[0])}

    def _vpc_endpoint(self, a: dict) -> dict[str, Any] | tuple[dict, list[tuple[str, str]]]:
        refused = self._refused("ec2:DescribeVpcEndpoints", "vpcId")
        if refused is not None:
            return refused
        vpc = str(a.get("vpcId"))
        if vpc not in self.account.s3_gateway_vpcs:
            return {}, [("vpcId", "no matching EC2 VPC Endpoint found")]
        return {
            **a,
            "id": f"vpce-{_hex(vpc, 17)}",
            "vpcEndpointType": "Gateway",
            "routeTableIds": [f"rtb-{_hex(vpc + 'rt', 17)}"],
            "state": "available",
        }

    def _quota(self, a: dict) -> dict[str, Any] | tuple[dict[str, Any], list[tuple[str, str]]]:
        code, service = str(a.get("quotaCode")), a.get("serviceCode")
        if service != "ec2" or code not in self.account.quotas:
            # How the SDK's mock monitor lets an invoke fail: the program sees an exception.
            reason = f"AccessDeniedException: no quota {service}/{code} in the mock account"
            return {}, [("quotaCode", reason)]
        return {
            **a,
            "id": f"{service}/{code}",
            "arn": f"arn:aws:servicequotas:{self.region}:{ACCOUNT}:{service}/{code}",
            "value": self.account.quotas[code],
            "defaultValue": 0.0,
            "adjustable": True,
            "globalQuota": False,
            "quotaName": code,
            "serviceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "usageMetrics": [],
        }


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, also recording parent, provider and URN of every registration."""

    def __init__(self, mocks: pulumi.runtime.Mocks, stack: str) -> None:
        super().__init__(mocks)
        self.records: list[Resource] = []
        self.rendered: list[ChartRender] = []
        self.stack = stack
        self.chart_error: charts.ChartError | None = None

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
            provider = request.provider.rsplit("::", 1)[0] if request.provider else None
            self.records.append(
                Resource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=_clean(inputs),
                    provider=provider or None,
                    parent=request.parent or None,
                    depends_on=tuple(sorted(request.dependencies)),
                    ignore_changes=tuple(request.ignoreChanges),
                )
            )
            if request.type in HELM_TYPES and self.chart_error is None:
                try:
                    self._render_chart(self.records[-1])
                except charts.ChartError as error:
                    # Raised once the program has run: an exception here would surface as a
                    # registration failure deep inside the engine's futures.
                    self.chart_error = error
        return response

    def _render_chart(self, chart: Resource) -> None:
        render = render_chart(chart)
        self.rendered.append(render)
        if not render.registered:
            return
        prefix = chart.inputs.get("resourcePrefix") or chart.name
        qualified_parent = chart.urn.split("::")[2]
        for obj in render.rendered.objects:
            type_ = kubernetes_type(obj)
            meta = obj.get("metadata") or {}
            # Resource names as the provider makes them: "<prefix>:<namespace>/<name>" (the
            # resourcePrefix input of helm.v4.Chart, pulumi_kubernetes/helm/v4/Chart.py).
            scoped = "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p)
            name = f"{prefix}:{scoped}"
            self.records.append(
                Resource(
                    type=type_,
                    name=name,
                    urn=f"urn:pulumi:{self.stack}::{PROJECT}::{qualified_parent}${type_}::{name}",
                    inputs=_provider_inputs(obj),
                    provider=chart.provider,
                    parent=chart.urn,
                    rendered_by=chart.urn,
                )
            )


def kubernetes_type(obj: Mapping[str, Any]) -> str:
    """The Pulumi type token of a Kubernetes object (`kubernetes:apps/v1:Deployment`)."""
    api_version = str(obj.get("apiVersion"))
    if "/" not in api_version:
        api_version = f"core/{api_version}"
    return f"kubernetes:{api_version}:{obj.get('kind')}"


def _provider_inputs(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A rendered object as the provider registers it: a v1 Secret's data always secret (the
    provider marks them so that raw YAML never leaks them: provider/pkg/provider/yaml/v2)."""
    inputs = dict(obj)
    if inputs.get("apiVersion") == "v1" and inputs.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if key in inputs:
                inputs[key] = Secret(inputs[key])
    return inputs


def chart_source(chart: Resource) -> tuple[charts.ChartSource, tuple[str, ...]]:
    """What a chart resource asks Helm to render, and the paths of values unknown at preview."""
    inputs = chart.inputs
    unknown: list[str] = []
    values = _revealed(inputs.get("values") or {}, "values", unknown)
    files = []
    for asset in inputs.get("valueYamlFiles") or []:
        if isinstance(asset, pulumi.StringAsset):
            files.append(asset.text)
        elif isinstance(asset, pulumi.FileAsset):
            files.append(Path(asset.path).read_text())
        else:
            raise TypeError(
                f"{chart.name}: valueYamlFiles holds {asset!r}, not a text or file asset"
            )
    post = inputs.get("postRenderer") or {}
    command = (post["command"], *(post.get("args") or [])) if post.get("command") else ()
    namespace = inputs.get("namespace") or "default"
    if (inputs.get("repositoryOpts") or {}).get("repo"):
        # With a repository, a Release skips the local chart and downloads (pulumi-kubernetes
        # provider/pkg/provider/helm_release.go `locateChart`): not what the rehearsal renders.
        raise charts.ChartError(
            f"{chart.name}: names the chart repository {inputs['repositoryOpts']['repo']}; "
            "install the vendored archive instead (infra/charts.py chart_path)"
        )
    # The path as the provider resolves it: relative to the working directory it shares with the
    # program (infra/charts.py). Only a pinned archive with its pinned bytes is rendered.
    archive = Path(str(inputs["chart"]))
    charts.pin_of(archive)
    source = charts.ChartSource(
        archive=archive,
        release=str(inputs.get("name") or chart.name),
        namespace=str(namespace),
        values=values,
        value_files=tuple(files),
        post_renderer=command,
        skip_crds=bool(inputs.get("skipCrds")),
    )
    return source, tuple(unknown)


def _revealed(value: Any, path: str, unknown: list[str]) -> Any:
    if isinstance(value, Secret):
        return _revealed(value.value, path, unknown)
    if value == UNKNOWN:
        unknown.append(path)
    if isinstance(value, dict):
        return {k: _revealed(v, f"{path}.{k}", unknown) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def render_chart(chart: Resource) -> ChartRender:
    source, unknown = chart_source(chart)
    rendered = charts.render(source)
    registered = chart.type == CHART_V4
    # helm.v4.Chart drops hooks; a helm.v3.Release is a Helm install, which creates its install
    # and upgrade hooks too (test hooks only run on `helm test`).
    installed = (
        rendered.objects
        if registered
        else (*rendered.objects, *charts.install_hooks(rendered.hooks))
    )
    cluster_scoped = CLUSTER_SCOPED_KINDS | {
        o["spec"]["names"]["kind"]
        for o in installed
        if o.get("kind") == "CustomResourceDefinition" and o["spec"].get("scope") == "Cluster"
    }
    objects = tuple(_with_namespace(o, source.namespace, cluster_scoped) for o in installed)
    rendered = charts.Rendered(objects, rendered.hooks, rendered.generated, rendered.duplicates)
    return ChartRender(
        resource=chart,
        source=source,
        rendered=rendered,
        registered=registered,
        unknown_values=unknown,
    )


def _with_namespace(
    obj: dict[str, Any], namespace: str, cluster_scoped: frozenset[str]
) -> dict[str, Any]:
    """The chart's namespace on every namespaced object that names none (the provider's
    Normalize step; Helm itself installs into the release namespace the same way). A custom
    resource is cluster-scoped when the chart's CRD for it says so."""
    meta = dict(obj.get("metadata") or {})
    if obj.get("kind") in cluster_scoped or meta.get("namespace"):
        return obj
    meta["namespace"] = namespace
    return {**obj, "metadata": meta}


def _clean(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return Secret(_clean(rpc.unwrap_rpc_secret(value)))
    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- Stack config ---------------------------------------------------------------------------------


def stack_config(
    stack: str, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The config map the CLI would hand the program: Pulumi.yaml defaults, then the stack file,
    then overrides (short keys mean the project namespace; a None value removes the key)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise FileNotFoundError(f"no stack file {stack_file.name} (stacks: {', '.join(stacks())})")
    merged: dict[str, Any] = {}
    schema: dict[str, dict] = {}
    for key, decl in (project.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        schema[full] = decl if isinstance(decl, dict) else {"value": decl}
        if "default" in schema[full]:
            merged[full] = schema[full]["default"]
        elif "value" in schema[full]:
            merged[full] = schema[full]["value"]
    merged.update((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            merged.pop(full, None)
        else:
            merged[full] = value
    secret_keys = []
    values = {}
    for key, value in merged.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Encrypted offline-unreadable value: a typed placeholder that stays secret.
            is_array = schema.get(key, {}).get("type") == "array"
            value = ["mock-secret-value-0000"] if is_array else "mock-secret-value-0000"
            secret_keys.append(key)
        else:
            value, secret = _unwrap_secrets(value)
            if secret:
                # Like the CLI: one secret leaf (`config set --secret --path`) makes the key secret.
                secret_keys.append(key)
        values[key] = _cli_string(value)
    return values, secret_keys


SECRET_URL_PLACEHOLDER: Final = "https://mock-secret.invalid/0000"
"""Stands in for an encrypted leaf whose field name says it is a URL (e.g. a Slack webhookUrl)."""


def _unwrap_secrets(value: Any, field: str = "") -> tuple[Any, bool]:
    """Nested secrets of an object or list value: `{"secure": ...}` leaves (encrypted, unreadable
    offline: a placeholder) and `Secret(...)` leaves (tests: the value itself)."""
    if isinstance(value, Secret):
        return value.value, True
    if isinstance(value, dict) and set(value) == {"secure"}:
        url = field.lower().endswith("url")
        return (SECRET_URL_PLACEHOLDER if url else "mock-secret-value-0000"), True
    if isinstance(value, dict):
        pairs = {k: _unwrap_secrets(v, str(k)) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(value, list):
        items = [_unwrap_secrets(v, field) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def load_stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> StackConfig:
    """The parsed StackConfig of a stack, exactly as the program sees it (no engine needed)."""
    values, secret_keys = stack_config(stack, overrides)
    return parse(values, stack, frozenset(secret_keys))


def _cli_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


# --- Running --------------------------------------------------------------------------------------


def run_stack(
    stack: str, overrides: Mapping[str, Any] | None = None, account: MockAccount | None = None
) -> Inventory:
    """Runs infra/__main__.py for a stack under the mocks: what it registered and exported."""
    values, secret_keys = stack_config(stack, overrides)
    return _run(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__"),
        stack,
        values,
        secret_keys,
        account,
    )


def run_function(
    fn: Callable[[], object],
    config: Mapping[str, Any] | None = None,
    stack: str = "test",
    account: MockAccount | None = None,
) -> Inventory:
    """Runs any function that builds resources (e.g. one component) under the same mocks."""
    values = {
        (k if ":" in k else f"{PROJECT}:{k}"): _cli_string(v) for k, v in (config or {}).items()
    }
    values.setdefault("aws:region", "us-west-2")
    return _run(fn, stack, values, [], account)


def _ensure_event_loop() -> None:
    """Pulumi's engine runs on the thread's current event loop. `asyncio.run` elsewhere in the same
    process (server and benchmark tests) leaves none behind, which makes every later run fail with
    "There is no current event loop"."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def _run(
    fn: Callable[[], Any],
    stack: str,
    values: dict[str, str],
    secret_keys: list[str],
    account: MockAccount | None = None,
) -> Inventory:
    _ensure_event_loop()
    mocks = AwsLikeMocks(values.get("aws:region", "us-west-2"), _caller(values), account)
    monitor = _RecordingMonitor(mocks, stack)
    # A fresh root stack per run: set_mocks only creates one when none exists (machine.md).
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(values, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=True, monitor=monitor)
    outputs: dict[str, Any] = {}

    def body() -> Any:
        fn()
        return _collect_outputs(outputs)

    try:
        _sync_await(run_pulumi_func(body))
    except BaseException as error:
        # Lets tests prove that a config error stopped the program before anything was registered.
        error.registered_resources = tuple(monitor.records)  # type: ignore[attr-defined]
        raise
    finally:
        settings.ROOT.set(None)
    if monitor.chart_error is not None:
        raise monitor.chart_error
    resources = tuple(sorted(monitor.records, key=lambda r: r.urn))
    rendered = tuple(sorted(monitor.rendered, key=lambda r: r.resource.urn))
    config = {k: Secret(v) if k in secret_keys else v for k, v in sorted(values.items())}
    return Inventory(
        resources=resources,
        outputs=dict(sorted(outputs.items())),
        rendered=rendered,
        invokes=tuple(sorted(mocks.invokes)),
        invoke_counts=dict(mocks.invoke_counts),
        config=config,
    )


def _caller(values: Mapping[str, str]) -> str:
    """Who runs Pulumi: the stack's CI deploy role (a session of it, as STS reports it), else its
    first admin principal, else a user no access entry names (the program then refuses to run)."""
    admins = json.loads(values.get(f"{PROJECT}:adminPrincipalArns") or "[]")
    principal = values.get(f"{PROJECT}:deployRoleArn") or (admins[0] if admins else "")
    if ":role/" in principal:
        head, name = principal.split(":role/", 1)
        account = head.rsplit(":", 1)[-1]
        return f"arn:aws:sts::{account}:assumed-role/{name.rsplit('/', 1)[-1]}/pulumi"
    return principal or f"arn:aws:iam::{ACCOUNT}:user/ci"


async def _collect_outputs(into: dict[str, Any]) -> None:
    root = settings.get_root_resource()
    exported = getattr(root, "outputs", {}) or {}
    for key, value in exported.items():
        output = pulumi.Output.from_input(value)
        known = await output.is_known()
        secret = await output.is_secret()
        resolved = _clean(await output.future(with_unknowns=True)) if known else UNKNOWN
        into[key] = Secret(resolved) if secret else resolved


def walk(value: Any) -> Iterator[Any]:
    """Every scalar inside nested inputs (for checks like 'no 0.0.0.0/0 anywhere')."""
    if isinstance(value, Secret):
        yield from walk(value.value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)
    else:
        yield value
