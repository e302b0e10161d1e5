"""Composition root: load the stack config, build the components in dependency order, export.

No resource is created here directly; each concern lives in its own component module. The config is
parsed and validated first, so a bad value stops the run before anything is registered.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `pulumi up` runs this directory as a script (Pulumi.yaml `main: infra/`); make the repository root
# importable so `infra.*` resolves the same way with or without an editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra import config
from infra.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.cluster import Cluster, ClusterAddons, ClusterAddonsArgs, ClusterArgs
from infra.network import Network, NetworkArgs
from infra.nodegroups import NodeGroups, NodeGroupsArgs

cfg = config.load()
name = cfg.cluster.name

# --- Platform: network, control plane, nodes, add-ons, autoscaler ---------------------------------
network = Network(name, NetworkArgs(config=cfg.network, cluster_name=name))
cluster = Cluster(
    name,
    ClusterArgs(config=cfg, vpc_id=network.vpc_id, private_subnet_ids=network.private_subnet_ids),
)
node_groups = NodeGroups(name, NodeGroupsArgs(config=cfg.node_groups, cluster=cluster))
addons = ClusterAddons(f"{name}-addons", ClusterAddonsArgs(cluster=cluster, nodes=node_groups.all))
autoscaler = ClusterAutoscaler(
    f"{name}-autoscaler",
    ClusterAutoscalerArgs(
        cluster=cluster,
        config=cfg.autoscaler,
        gpu_groups=node_groups.gpu_configs,
        depends_on=(node_groups.system,),
    ),
)

# --- Workload: GPU stack, monitoring, image, inference ------------------------------------------
# Built on `cluster` (provider, pod_identity, name, region), `node_groups` (system nodes first),
# `addons` (EBS CSI driver for Prometheus' volume) and `cfg` (gpu, monitoring, model, inference).

# --- Stack outputs --------------------------------------------------------------------------------
pulumi.export("clusterName", name)
pulumi.export("region", cfg.region)
pulumi.export("kubernetesVersion", cfg.cluster.kubernetes_version)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("gpuNodeGroups", [g.name for g in cfg.node_groups.gpu])
