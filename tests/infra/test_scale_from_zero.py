"""Scale from zero after scale to zero (kubernetes/autoscaler issue #8799: CA 1.32-1.34 scales an
EKS GPU managed group from zero only the first time, then reports `Insufficient nvidia.com/gpu`).

The mechanism, in cluster-autoscaler-1.35.0 (the pinned chart's app version; READ_AT below), as
#8123 describes it: `MixedTemplateNodeInfoProvider.Process`
(processors/nodeinfosprovider/mixed_nodeinfos_processor.go) builds each group's template from a
ready node and caches it; once the group is empty, the cached template is used instead of the ASG's
(the cache lives for `node-info-cache-expire-time`, 10 years by default, config/flags/flags.go). A
GPU node is Ready before the device plugin advertises `nvidia.com/gpu`; cached at that moment, the
template has no GPU, and every later scale-up from zero is refused.

What prevents it: `Process` only sees `readyNodes`, which `obtainNodeLists`
(core/static_autoscaler.go) first passes through
`GpuCustomResourcesProcessor.FilterOutNodesWithUnreadyResources`
(processors/customresources/gpu_processor.go). That drops every node that carries the cloud
provider's GPU label but has no allocatable GPU, and the AWS provider's GPU label is
`k8s.amazonaws.com/accelerator` (cloudprovider/aws/aws_cloud_provider.go `GPULabel`). A node
without that label is never filtered, and its GPU-less state can be cached. EKS applies a managed
group's labels when the node registers, so the label is there before the node is Ready. 1.35.0
adds one exception, a GPU the cloud provider exposes through DRA (`gpuExposedViaDra`): the AWS
provider sets no DRA driver for a GPU (`GetNodeGpuConfig` -> gpu.GetNodeGPUFromCloudProvider), and
the GPUs here come from the device plugin, so the filter applies as in 1.34.
"""

from __future__ import annotations

from infra import gpu_spec, versions
from rehearsal.mockengine import Inventory

READ_AT = "1.35.0"
"""The cluster-autoscaler release whose source this module restates."""
AWS_GPU_LABEL = "k8s.amazonaws.com/accelerator"
"""cloudprovider/aws/aws_cloud_provider.go at cluster-autoscaler-1.35.0: `GPULabel`."""
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
TAG = "aws:autoscaling/tag:Tag"


def template_candidate(labels: dict[str, str], allocatable: dict[str, int]) -> bool:
    """gpu_processor.go `FilterOutNodesWithUnreadyResources`: a ready node stays a candidate for a
    (cached) template unless it has the GPU label and no allocatable nvidia.com/gpu (or DirectX)."""
    unready_gpu = AWS_GPU_LABEL in labels and not allocatable.get(gpu_spec.GPU_RESOURCE)
    return not unready_gpu


def gpu_groups(inventory: Inventory) -> list[dict]:
    return [
        g.inputs for g in inventory.of_type(NODE_GROUP) if g.inputs["nodeGroupName"] != "system"
    ]


def test_the_restated_mechanism_is_the_pinned_autoscalers() -> None:
    assert versions.CLUSTER_AUTOSCALER.app_version == READ_AT, (
        f"cluster-autoscaler is pinned at {versions.CLUSTER_AUTOSCALER.app_version}; this module "
        f"restates {READ_AT}: re-read the template cache and the GPU filter at the new tag"
    )


def test_the_accelerator_label_is_the_autoscalers_aws_gpu_label() -> None:
    assert gpu_spec.ACCELERATOR_LABEL == AWS_GPU_LABEL


def test_a_gpu_node_is_never_cached_before_its_gpus_are_allocatable(inventory: Inventory) -> None:
    """A node of every GPU group, Ready but before the device plugin registered, is kept out of the
    templates; once its GPUs are allocatable it is a good template."""
    for group in gpu_groups(inventory):
        labels = group["labels"]
        assert labels.get(AWS_GPU_LABEL), f"{group['nodeGroupName']} nodes lack {AWS_GPU_LABEL}"
        assert not template_candidate(labels, {"cpu": 4}), group["nodeGroupName"]
        assert template_candidate(labels, {"cpu": 4, gpu_spec.GPU_RESOURCE: 1})


def test_without_the_label_the_gpu_less_node_would_be_cached() -> None:
    """The #8799 / #8123 path, for contrast: the same node without the label is a candidate."""
    labels = {k: v for k, v in gpu_spec.gpu_node_labels("nvidia-l4").items() if k != AWS_GPU_LABEL}
    assert template_candidate(labels, {"cpu": 4})


def test_the_asg_template_of_an_empty_group_has_its_gpus(inventory: Inventory) -> None:
    """With no cache entry (a restarted autoscaler, an expired entry) the template comes from the
    ASG: its resource tag gives the GPU count, its label tags the GPU label."""
    tags = inventory.of_type(TAG)
    for group in gpu_groups(inventory):
        name = group["nodeGroupName"]
        asg = {
            t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
            for t in tags
            if t.inputs["autoscalingGroupName"].startswith(f"eks-{name}-")
        }
        prefix = gpu_spec.AUTOSCALER_TAG_PREFIX
        assert int(asg[f"{prefix}/resources/{gpu_spec.GPU_RESOURCE}"]) >= 1, name
        assert asg[f"{prefix}/label/{AWS_GPU_LABEL}"] == group["labels"][AWS_GPU_LABEL], name
