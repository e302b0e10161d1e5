"""Stack config: one test per validation rule, the schema in Pulumi.yaml, and the parsed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config, versions
from infra.config import ConfigError, StackConfig
from rehearsal.mockengine import ROOT, load_stack_config, run_stack, stacks

WORLD = "0.0.0.0/0"
GOOD_KEYS = ["k" * 24]
SECRET_KEYS = {"secure": "v1:x"}
PROD_CERT = "arn:aws:acm:us-east-1:111122223333:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
"""An ACM certificate in prod's region (us-east-1)."""
DEV_CERT = PROD_CERT.replace("us-east-1", "us-west-2")
HOSTNAME = "embeddings.example.com"
"""A name the certificates above would cover."""


def parse(overrides: dict[str, Any] | None = None, stack: str = "dev") -> StackConfig:
    return load_stack_config(stack, overrides)


def group(**fields: Any) -> dict[str, Any]:
    base = {
        "name": "gpu-spot",
        "capacityType": "SPOT",
        "instanceTypes": ["g6.xlarge", "g5.xlarge"],
        "minSize": 0,
        "desiredSize": 0,
        "maxSize": 2,
    }
    return {**base, **fields}


# (id, stack, overrides, the key the error must name, a fragment of what is allowed)
RULES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("region-unknown", "dev", {"aws:region": "mars-1"}, "aws:region", "one of"),
    ("region-missing", "dev", {"aws:region": None}, "aws:region", "required"),
    ("az-count", "dev", {"availabilityZones": ["us-west-2a"]}, "availabilityZones", "2 to 6"),
    (
        "az-duplicate",
        "dev",
        {"availabilityZones": ["us-west-2a", "us-west-2a"]},
        "availabilityZones",
        "distinct",
    ),
    (
        "az-other-region",
        "dev",
        {"availabilityZones": ["us-east-1a", "us-east-1b"]},
        "availabilityZones",
        "zones of us-west-2",
    ),
    ("vpc-not-cidr", "dev", {"vpcCidr": "10.0.0.0/33"}, "vpcCidr", "CIDR"),
    ("vpc-public", "dev", {"vpcCidr": "8.8.0.0/16"}, "vpcCidr", "RFC 1918"),
    (
        "subnets-do-not-fit",
        "dev",
        {"vpcCidr": "10.0.0.0/18"},
        "privateSubnetPrefixLength",
        "must fit",
    ),
    (
        "subnet-prefix-range",
        "dev",
        {"privateSubnetPrefixLength": 30},
        "privateSubnetPrefixLength",
        "17 to 28",
    ),
    ("nat-mode", "dev", {"natGateways": "two"}, "natGateways", "single, perAz"),
    ("existing-vpc-id", "dev", {"existingVpcId": "vpc-nothex!"}, "existingVpcId", "vpc-"),
    (
        "existing-vpc-needs-two-subnets",
        "dev",
        {
            "existingVpcId": "vpc-0123456789abcdef0",
            "existingPrivateSubnetIds": ["subnet-0123456789abcdef0"],
        },
        "existingPrivateSubnetIds",
        "at least two",
    ),
    (
        "existing-subnet-id",
        "dev",
        {"existingVpcId": "vpc-0123456789abcdef0", "existingPrivateSubnetIds": ["sn-1", "sn-2"]},
        "existingPrivateSubnetIds",
        "subnet ids",
    ),
    # The minor is pinned in infra/versions.py: a stack that still sets it is told, not ignored.
    (
        "kubernetes-version-retired",
        "dev",
        {"kubernetesVersion": "1.34"},
        "kubernetesVersion",
        f"pinned in infra/versions.py (KUBERNETES_VERSION = {versions.KUBERNETES_VERSION})",
    ),
    (
        "kubernetes-support-type",
        "dev",
        {"kubernetesSupportType": "FOREVER"},
        "kubernetesSupportType",
        "one of STANDARD, EXTENDED",
    ),
    ("cluster-name", "dev", {"clusterName": "9_bad"}, "clusterName", "starting with a letter"),
    (
        "public-endpoint-needs-cidrs",
        "dev",
        {"publicAccessCidrs": []},
        "publicAccessCidrs",
        "nothing is open",
    ),
    (
        "api-cidr-host-bits",
        "dev",
        {"publicAccessCidrs": ["203.0.113.7/24"]},
        "publicAccessCidrs",
        "host bits",
    ),
    (
        "no-world-api-in-production",
        "prod",
        {"publicAccessCidrs": [WORLD]},
        "publicAccessCidrs",
        "allowWorldApiAccess",
    ),
    (
        "admin-arn",
        "dev",
        {"adminPrincipalArns": ["alice"]},
        "adminPrincipalArns",
        "IAM role or user",
    ),
    (
        "log-type",
        "dev",
        {"controlPlaneLogTypes": ["api", "everything"]},
        "controlPlaneLogTypes",
        "subset",
    ),
    ("boolean", "dev", {"production": "yes"}, "production", "true or false"),
    ("integer", "dev", {"hpaMaxReplicas": "two"}, "hpaMaxReplicas", "an integer"),
    ("system-group-object", "dev", {"systemNodeGroup": ["m6i.large"]}, "systemNodeGroup", "object"),
    (
        "system-group-min-size",
        "dev",
        {
            "systemNodeGroup": {
                "instanceTypes": ["m6i.large"],
                "minSize": 0,
                "desiredSize": 0,
                "maxSize": 2,
            }
        },
        "systemNodeGroup",
        "minSize >= 1",
    ),
    (
        "system-group-no-gpu",
        "dev",
        {
            "systemNodeGroup": {
                "instanceTypes": ["g5.xlarge"],
                "minSize": 1,
                "desiredSize": 1,
                "maxSize": 2,
            }
        },
        "systemNodeGroup[system].instanceTypes",
        "non-GPU",
    ),
    ("gpu-groups-empty", "dev", {"gpuNodeGroups": []}, "gpuNodeGroups", "non-empty"),
    (
        "gpu-type-known",
        "dev",
        {"gpuNodeGroups": [group(instanceTypes=["p5.48xlarge"])]},
        "gpuNodeGroups[gpu-spot].instanceTypes",
        "known to infra/config.py",
    ),
    (
        "one-gpu-shape-per-group",
        "dev",
        {"gpuNodeGroups": [group(instanceTypes=["g5.xlarge", "g5.2xlarge"])]},
        "gpuNodeGroups[gpu-spot].instanceTypes",
        "one GPU shape",
    ),
    (
        "min-desired-max",
        "dev",
        {"gpuNodeGroups": [group(minSize=2, desiredSize=1, maxSize=3)]},
        "gpuNodeGroups[gpu-spot]",
        "minSize <= desiredSize <= maxSize",
    ),
    (
        "size-is-integer",
        "dev",
        {"gpuNodeGroups": [group(maxSize="2")]},
        "gpuNodeGroups[gpu-spot].maxSize",
        "an integer",
    ),
    (
        "group-unknown-field",
        "dev",
        {"gpuNodeGroups": [group(spotPrice="0.5")]},
        "gpuNodeGroups",
        "only the fields",
    ),
    (
        "capacity-type",
        "dev",
        {"gpuNodeGroups": [group(capacityType="RESERVED")]},
        "gpuNodeGroups[gpu-spot].capacityType",
        "SPOT, ON_DEMAND",
    ),
    (
        "group-name",
        "dev",
        {"gpuNodeGroups": [group(name="GPU_Spot")]},
        "gpuNodeGroups.name",
        "DNS label",
    ),
    (
        "group-names-unique",
        "dev",
        {"gpuNodeGroups": [group(), group()]},
        "gpuNodeGroups",
        "unique group names",
    ),
    (
        "spot-group-required",
        "dev",
        {"gpuNodeGroups": [group(capacityType="ON_DEMAND")]},
        "gpuNodeGroups",
        "at least one SPOT",
    ),
    (
        "gpu-disk-size",
        "dev",
        {"gpuNodeGroups": [group(diskGiB=60)]},
        "gpuNodeGroups[gpu-spot].diskGiB",
        "at least 100",
    ),
    ("ami-release", "dev", {"amiReleaseVersion": "latest"}, "amiReleaseVersion", "EKS AMI release"),
    # An AMI release is built for one Kubernetes version; the node groups run the pinned one.
    (
        "ami-release-minor",
        "dev",
        {"amiReleaseVersion": "1.34.2-20251112"},
        "amiReleaseVersion",
        f"release of Kubernetes {versions.KUBERNETES_VERSION}",
    ),
    (
        "autoscaler-duration",
        "dev",
        {"autoscalerScaleDownUnneededTime": "10 minutes"},
        "autoscalerScaleDownUnneededTime",
        "duration",
    ),
    ("time-slicing-range", "dev", {"timeSlicingReplicas": 0}, "timeSlicingReplicas", "1 to 16"),
    (
        "prometheus-retention",
        "dev",
        {"prometheusRetention": "15 days"},
        "prometheusRetention",
        "duration",
    ),
    ("prometheus-volume", "dev", {"prometheusVolumeGiB": 5}, "prometheusVolumeGiB", "10 to 16384"),
    (
        "scrape-interval",
        "dev",
        {"prometheusScrapeInterval": "fast"},
        "prometheusScrapeInterval",
        "duration",
    ),
    ("model-id", "dev", {"modelId": "not a model!"}, "modelId", "Hugging Face model id"),
    (
        "model-revision-pinned",
        "dev",
        {"modelRevision": "main"},
        "modelRevision",
        "40-character commit",
    ),
    ("embedding-dimension", "dev", {"embeddingDimension": 0}, "embeddingDimension", "1 to 8192"),
    ("dtype", "dev", {"dtype": "int8"}, "dtype", "float16, bfloat16, float32"),
    ("normalize", "dev", {"normalize": "yes"}, "normalize", "one of true, false, model"),
    (
        "image-pinned-by-digest",
        "dev",
        {"image": "ghcr.io/acme/embed:latest"},
        "image",
        "pinned by digest",
    ),
    ("namespace-dedicated", "dev", {"namespace": "kube-system"}, "namespace", "dedicated"),
    ("namespace-label", "dev", {"namespace": "Inference_NS"}, "namespace", "DNS label"),
    (
        "hpa-min-max",
        "dev",
        {"hpaMinReplicas": 2, "hpaMaxReplicas": 1},
        "hpaMaxReplicas",
        ">= hpaMinReplicas",
    ),
    ("hpa-max-fits-gpus", "dev", {"hpaMaxReplicas": 3}, "hpaMaxReplicas", "at most 2"),
    (
        "hpa-gpu-target",
        "dev",
        {"hpaTargetGpuUtilization": 120},
        "hpaTargetGpuUtilization",
        "1 to 100",
    ),
    (
        "queue-holds-a-batch",
        "dev",
        {"maxQueueItems": 16, "maxBatchSize": 64},
        "maxQueueItems",
        ">= maxBatchSize",
    ),
    ("queue-target", "dev", {"maxQueueMs": 0}, "maxQueueMs", "an integer from 50 to 600000"),
    ("cpu-quantity", "dev", {"podCpuRequest": "lots"}, "podCpuRequest", "CPU quantity"),
    ("cpu-fits-node", "dev", {"podCpuRequest": "3500m"}, "podCpuRequest", "at most 3"),
    ("memory-fits-node", "dev", {"podMemoryRequest": "14Gi"}, "podMemoryRequest", "at most 13Gi"),
    ("internet-facing-needs-keys", "dev", {"internetFacing": True}, "apiKeys", "at least one key"),
    (
        "world-clients-need-internet-facing",
        "dev",
        {"clientCidrs": [WORLD]},
        "clientCidrs",
        "internetFacing",
    ),
    (
        "world-clients-need-explicit-allow",
        "dev",
        {"clientCidrs": [WORLD], "internetFacing": True, "apiKeys": {"secure": "v1:x"}},
        "clientCidrs",
        "allowWorldClients",
    ),
    ("api-keys-secret", "dev", {"apiKeys": GOOD_KEYS}, "apiKeys", "--secret"),
    (
        "tls-cert-not-acm",
        "dev",
        {"tlsCertificateArn": "arn:aws:iam::111122223333:server-certificate/embeddings"},
        "tlsCertificateArn",
        "ACM certificate ARN",
    ),
    (
        "tls-cert-not-an-arn",
        "dev",
        {"tlsCertificateArn": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"},
        "tlsCertificateArn",
        "ACM certificate ARN",
    ),
    (
        "tls-cert-short-account",
        "dev",
        {"tlsCertificateArn": DEV_CERT.replace("111122223333", "1111")},
        "tlsCertificateArn",
        "12-digit account",
    ),
    (
        "tls-cert-other-region",
        "dev",
        {"tlsCertificateArn": PROD_CERT},
        "tlsCertificateArn",
        "arn:aws:acm:us-west-2:",
    ),
    (
        "tls-cert-other-partition",
        "dev",
        {"tlsCertificateArn": DEV_CERT.replace("arn:aws:", "arn:aws-cn:")},
        "tlsCertificateArn",
        "region only",
    ),
    (
        "prod-internet-facing-needs-tls",
        "prod",
        {"internetFacing": True, "apiKeys": SECRET_KEYS},
        "tlsCertificateArn",
        "clear text",
    ),
    (
        "prod-internet-facing-tls-needs-a-hostname",
        "prod",
        {"internetFacing": True, "apiKeys": SECRET_KEYS, "tlsCertificateArn": PROD_CERT},
        "endpointHostname",
        "name verification",
    ),
    (
        "hostname-with-scheme",
        "dev",
        {"endpointHostname": "https://embed.example.com"},
        "endpointHostname",
        "no scheme",
    ),
    (
        "hostname-with-port",
        "dev",
        {"endpointHostname": "embed.example.com:443"},
        "endpointHostname",
        "port",
    ),
    (
        "hostname-with-path",
        "dev",
        {"endpointHostname": "embed.example.com/v1"},
        "endpointHostname",
        "path",
    ),
    (
        "hostname-uppercase",
        "dev",
        {"endpointHostname": "Embed.Example.com"},
        "endpointHostname",
        "lowercase",
    ),
    (
        "hostname-single-label",
        "dev",
        {"endpointHostname": "embeddings"},
        "endpointHostname",
        "fully qualified",
    ),
    (
        "hostname-trailing-dot",
        "dev",
        {"endpointHostname": "embed.example.com."},
        "endpointHostname",
        "trailing dot",
    ),
    (
        "hostname-label-hyphen",
        "dev",
        {"endpointHostname": "-embed.example.com"},
        "endpointHostname",
        "RFC 1123",
    ),
    (
        "hostname-label-too-long",
        "dev",
        {"endpointHostname": "a" * 64 + ".example.com"},
        "endpointHostname",
        "RFC 1123",
    ),
    (
        "hostname-too-long",
        "dev",
        {"endpointHostname": ".".join(["a" * 63] * 4) + ".com"},
        "endpointHostname",
        "RFC 1123",
    ),
    (
        "hostname-wildcard",
        "dev",
        {"endpointHostname": "*.example.com"},
        "endpointHostname",
        "RFC 1123",
    ),
    (
        "hostname-ip-address",
        "dev",
        {"endpointHostname": "10.0.0.1"},
        "endpointHostname",
        "RFC 1123",
    ),
    (
        "zone-id-lowercase",
        "dev",
        {"endpointHostname": "embed.example.com", "route53ZoneId": "z0123456789abc"},
        "route53ZoneId",
        "hosted zone id",
    ),
    (
        "zone-id-with-prefix",
        "dev",
        {"endpointHostname": "embed.example.com", "route53ZoneId": "/hostedzone/Z0123456789ABC"},
        "route53ZoneId",
        "hosted zone id",
    ),
    (
        "zone-id-too-long",
        "dev",
        {"endpointHostname": "embed.example.com", "route53ZoneId": "Z" + "A" * 33},
        "route53ZoneId",
        "hosted zone id",
    ),
    (
        "zone-id-needs-a-hostname",
        "dev",
        {"route53ZoneId": "Z0123456789ABC"},
        "route53ZoneId",
        "together with endpointHostname",
    ),
]


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "allowed"),
    [rule[1:] for rule in RULES],
    ids=[rule[0] for rule in RULES],
)
def test_rule_rejects_with_file_key_value_and_allowed(
    stack: str, overrides: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(overrides, stack)
    error = caught.value
    assert error.stack_file == f"Pulumi.{stack}.yaml"
    assert key in error.key, f"error names {error.key}, expected {key}"
    assert allowed in error.allowed, error.allowed
    message = str(error)
    assert message.startswith(f"Pulumi.{stack}.yaml: "), message
    assert repr(error.value) in message


def test_every_rule_is_distinct() -> None:
    assert len({rule[0] for rule in RULES}) == len(RULES)


def test_an_ami_release_of_the_pinned_minor_pins_every_node_group() -> None:
    release = f"{versions.KUBERNETES_VERSION}.6-20260714"
    assert parse({"amiReleaseVersion": release}).node_groups.ami_release_version == release


def test_the_minor_comes_from_the_versions_table_and_support_type_from_the_stack() -> None:
    cluster = parse().cluster
    assert cluster.kubernetes_version == versions.KUBERNETES_VERSION
    assert cluster.support_type == "STANDARD"
    assert parse({"kubernetesSupportType": "EXTENDED"}).cluster.support_type == "EXTENDED"


def test_a_config_error_stops_the_program_before_any_resource() -> None:
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", {"kubernetesVersion": "1.20"})
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"apiKeys": {"secure": "v1:x"}, "clientCidrs": [WORLD], "internetFacing": True})
    assert "mock-secret-value" not in str(caught.value)
    keys = parse({"apiKeys": {"secure": "v1:x"}}).inference.api_keys
    assert len(keys) == 1
    assert "mock-secret-value" not in repr(keys)


# --- What the rules allow -------------------------------------------------------------------------


def test_world_api_access_is_allowed_in_dev_and_when_production_opts_in() -> None:
    assert parse({"publicAccessCidrs": [WORLD]}).cluster.public_access_cidrs == (WORLD,)
    prod = parse(
        {"endpointPublicAccess": True, "publicAccessCidrs": [WORLD], "allowWorldApiAccess": True},
        "prod",
    )
    assert prod.cluster.public_access_cidrs == (WORLD,)


def test_a_private_endpoint_needs_no_cidrs() -> None:
    cfg = parse({"endpointPublicAccess": False, "publicAccessCidrs": []})
    assert cfg.cluster.public_access_cidrs == ()


def test_internet_facing_with_keys_and_explicit_world_clients_is_allowed() -> None:
    cfg = parse(
        {
            "internetFacing": True,
            "apiKeys": {"secure": "v1:x"},
            "clientCidrs": [WORLD],
            "allowWorldClients": True,
        }
    )
    assert cfg.inference.internet_facing
    assert cfg.inference.client_cidrs == (WORLD,)


def test_tls_is_off_unless_a_certificate_is_set(stack: str) -> None:
    assert parse(stack=stack).inference.tls_certificate_arn is None


def test_a_certificate_of_the_stack_region_turns_tls_on() -> None:
    assert parse({"tlsCertificateArn": DEV_CERT}).inference.tls_certificate_arn == DEV_CERT
    public = {
        "internetFacing": True,
        "apiKeys": SECRET_KEYS,
        "tlsCertificateArn": PROD_CERT,
        "endpointHostname": HOSTNAME,
    }
    cfg = parse(public, "prod")
    assert (cfg.production, cfg.inference.internet_facing) == (True, True)
    assert cfg.inference.tls_certificate_arn == PROD_CERT


def test_tls_is_optional_where_no_key_crosses_the_internet_in_production() -> None:
    # Internal NLBs (any stack) and internet-facing non-production stacks may stay plain HTTP.
    assert parse({"internetFacing": True, "apiKeys": SECRET_KEYS}).inference.internet_facing
    assert not parse(stack="prod").inference.internet_facing


def test_the_endpoint_name_and_its_zone_are_optional(stack: str) -> None:
    inference = parse(stack=stack).inference
    assert (inference.endpoint_hostname, inference.route53_zone_id) == (None, None)


@pytest.mark.parametrize(
    "hostname",
    [HOSTNAME, "a.b", "embed-1.eu-west-1.ml.example.co.uk", "x" * 63 + ".example.com", "1a.io"],
)
def test_lowercase_fully_qualified_names_are_accepted(hostname: str) -> None:
    inference = parse({"endpointHostname": hostname, "route53ZoneId": "Z0123456789ABCDEFGHIJ"})
    assert inference.inference.endpoint_hostname == hostname
    assert inference.inference.route53_zone_id == "Z0123456789ABCDEFGHIJ"


def test_a_hostname_is_needed_only_where_https_clients_cross_the_internet_in_production() -> None:
    # The rule guards https clients on the internet in production; internal and non-production
    # stacks may use the NLB's own name (e.g. behind their own DNS) and are not refused.
    assert parse({"tlsCertificateArn": PROD_CERT}, "prod").inference.endpoint_hostname is None
    public_tls = {"internetFacing": True, "apiKeys": SECRET_KEYS, "tlsCertificateArn": DEV_CERT}
    assert parse(public_tls).inference.endpoint_hostname is None


def test_time_slicing_raises_the_replica_ceiling() -> None:
    assert parse({"timeSlicingReplicas": 2, "hpaMaxReplicas": 4}).inference.hpa_max_replicas == 4


def test_a_pinned_revision_and_a_digest_image_are_accepted() -> None:
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/embed@sha256:" + "a" * 64
    cfg = parse({"modelRevision": "0123456789abcdef0123456789abcdef01234567", "image": image})
    assert cfg.model.revision == "0123456789abcdef0123456789abcdef01234567"
    assert cfg.inference.image == image


def test_existing_vpc_is_used_as_given() -> None:
    cfg = parse(
        {
            "existingVpcId": "vpc-0123456789abcdef0",
            "existingPrivateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        }
    )
    assert cfg.network.existing is not None
    assert cfg.network.existing.private_subnet_ids == (
        "subnet-0123456789abcdef0",
        "subnet-0123456789abcdef1",
    )


# --- The stacks as committed ----------------------------------------------------------------------


def test_dev_is_small_and_spot_only() -> None:
    cfg = parse()
    assert cfg.network.availability_zones == ("us-west-2a", "us-west-2b")
    assert not cfg.network.nat_per_az
    assert not cfg.production
    assert [g.capacity_type for g in cfg.node_groups.gpu] == ["SPOT"]
    (gpu,) = cfg.node_groups.gpu
    assert (gpu.min_size, gpu.max_size) == (0, 2)
    assert all(t.endswith(".xlarge") for t in gpu.instance_types)
    assert {t.split(".")[0] for t in gpu.instance_types} == {"g4dn", "g5", "g6"}


def test_prod_is_multi_az_diversified_with_an_on_demand_fallback() -> None:
    cfg = parse(stack="prod")
    assert cfg.production
    assert len(cfg.network.availability_zones) == 3
    assert cfg.network.nat_per_az
    spot = [g for g in cfg.node_groups.gpu if g.is_spot]
    on_demand = [g for g in cfg.node_groups.gpu if not g.is_spot]
    assert len(spot) >= 2
    assert on_demand
    assert len({t.split(".")[0] for g in spot for t in g.instance_types}) >= 2, "families"
    assert len({g.instance_types[0].split(".")[1] for g in spot}) >= 2, "sizes"
    assert {g.min_gpu_memory_gib for g in cfg.node_groups.gpu} == {24}, "one GPU class"
    assert max(g.max_size for g in cfg.node_groups.gpu) > 2
    assert WORLD not in cfg.cluster.public_access_cidrs
    assert cfg.cluster.public_access_cidrs
    assert cfg.cluster.private_api_access_cidrs, "a private path for the corporate network"


@pytest.mark.parametrize("stack", stacks())
def test_subnets_are_computed_disjoint_and_inside_the_vpc(stack: str) -> None:
    import ipaddress

    net = parse(stack=stack).network
    vpc = ipaddress.ip_network(net.vpc_cidr)
    subnets = [ipaddress.ip_network(c) for c in net.private_subnet_cidrs + net.public_subnet_cidrs]
    assert len(subnets) == 2 * len(net.availability_zones)
    assert all(s.subnet_of(vpc) for s in subnets)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])


def test_dev_subnet_layout() -> None:
    net = parse().network
    assert net.private_subnet_cidrs == ("10.0.0.0/19", "10.0.32.0/19")
    assert net.public_subnet_cidrs == ("10.0.64.0/24", "10.0.65.0/24")


def test_defaults_come_from_pulumi_yaml() -> None:
    schema = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    cfg = parse()
    assert cfg.model.id == schema["modelId"]["default"] == "thenlper/gte-large-zh"
    assert cfg.model.embedding_dimension == schema["embeddingDimension"]["default"] == 1024
    assert cfg.inference.max_queue_items == schema["maxQueueItems"]["default"]
    assert cfg.inference.max_queue_ms == schema["maxQueueMs"]["default"]
    assert cfg.inference.client_cidrs == (cfg.network.vpc_cidr,), "empty clientCidrs: the VPC only"
    assert cfg.cluster.name == "gpu-inference-dev"


# --- The stack files (the declarations themselves: tests/infra/test_keys.py) ----------------------


def declared() -> dict[str, dict[str, Any]]:
    decls: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    return decls


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_stack_files_use_only_declared_keys(stack_file: Path) -> None:
    keys = (yaml.safe_load(stack_file.read_text()) or {}).get("config", {})
    decls = declared()
    for key in keys:
        namespace, _, short = key.partition(":")
        assert key == "aws:region" or (namespace == config.PROJECT and short in decls), key


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_keys_without_a_default_are_set_in_every_stack(stack_file: Path) -> None:
    """The CLI refuses to run a stack that lacks a declared key with no default."""
    keys = (yaml.safe_load(stack_file.read_text()) or {}).get("config", {})
    assert "aws:region" in keys
    for key, decl in declared().items():
        if "default" not in decl and "value" not in decl:
            assert f"{config.PROJECT}:{key}" in keys, f"{stack_file.name} must set {key}"
