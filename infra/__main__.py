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

from infra import (
    alerts,
    charts,
    config,
    dashboard,
    gpu,
    gpu_spec,
    headroom,
    inference,
    kubernetes_support,
    monitoring,
    preflight,
    schedule,
)
from infra.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.cluster import (
    Cluster,
    ClusterAddons,
    ClusterAddonsArgs,
    ClusterArgs,
    check_caller_access,
)
from infra.cost import CostEstimate, CostEstimateArgs
from infra.dns import EndpointDns, EndpointDnsArgs, require_hostname
from infra.gpu import GpuStack, GpuStackArgs
from infra.grafana import Grafana, GrafanaArgs
from infra.headroom import GpuHeadroom, HeadroomArgs
from infra.image import ImageArgs, InferenceImage
from infra.inference import Inference, InferenceArgs
from infra.loadbalancer import LoadBalancerController, LoadBalancerControllerArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs
from infra.nodegroups import NodeGroups, NodeGroupsArgs
from infra.schedule import ScaledDeployment, ScheduleArgs, ServingSchedule
from infra.scrape import ScrapeSettings
from infra.teardown import VolumeSweep, VolumeSweepArgs
from service import contract

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
"""The image's build context (its .dockerignore selects what is sent)."""
DASHBOARD_FILE = "gpu-inference.json"

cfg = config.load()
# The vendored chart archives are the pinned bytes (infra/versions.py), before any resource.
charts.check_archives()
# The account's side of the config (instance type offerings, GPU quotas), before any resource.
preflight.check(cfg)
# EKS's version calendar: the pinned Kubernetes minor still supported the way the stack asks.
support = kubernetes_support.check(cfg)
name = cfg.cluster.name
# EKS grants the cluster's creator nothing (cluster.py): who runs Pulumi must have an access entry.
check_caller_access(cfg)

# --- Platform: network, control plane, nodes, add-ons, autoscaler ---------------------------------
network = Network(name, NetworkArgs(config=cfg.network, cluster_name=name, region=cfg.region))
cluster = Cluster(
    name,
    ClusterArgs(config=cfg, vpc_id=network.vpc_id, private_subnet_ids=network.private_subnet_ids),
)
# Made before the node groups: `pulumi destroy` runs it after them, when all volumes are detached.
volume_sweep = VolumeSweep(
    f"{name}-volume-sweep",
    VolumeSweepArgs(region=cfg.region, tag_key=monitoring.VOLUME_TAG, tag_value=name),
)
node_groups = NodeGroups(
    name,
    NodeGroupsArgs(
        config=cfg.node_groups,
        cluster=cluster,
        time_slicing_replicas=cfg.gpu.time_slicing_replicas,
    ),
    opts=pulumi.ResourceOptions(depends_on=[volume_sweep]),
)
# The platform comes up on the system group alone: DNS (and all that waits for it) never waits for
# a GPU group, which may not start at all (a zero G-instance quota, no spot capacity).
addons = ClusterAddons(
    f"{name}-addons", ClusterAddonsArgs(cluster=cluster, system_nodes=node_groups.system)
)
autoscaler = ClusterAutoscaler(
    f"{name}-autoscaler",
    ClusterAutoscalerArgs(
        cluster=cluster,
        config=cfg.autoscaler,
        gpu_groups=node_groups.gpu_configs,
        # Its first AWS call resolves the regional endpoint through cluster DNS; without an answer
        # the process exits and crash-loops with back-off.
        depends_on=(node_groups.system, addons.coredns),
    ),
)

# --- Workload: GPU stack, monitoring, image, inference ------------------------------------------
on_cluster = pulumi.ResourceOptions(providers=[cluster.provider])
gpu_stack = GpuStack(
    f"{name}-gpu",
    GpuStackArgs(namespace=gpu.NAMESPACE, time_slicing_replicas=cfg.gpu.time_slicing_replicas),
    opts=on_cluster,
)
metrics = Monitoring(
    f"{name}-monitoring",
    MonitoringArgs(
        namespace=monitoring.NAMESPACE,
        cluster_name=name,
        system_node_selector=gpu_spec.system_node_selector(),
        retention=cfg.monitoring.prometheus_retention,
        volume_size_gib=cfg.monitoring.prometheus_volume_gib,
        scrape=ScrapeSettings(
            inference_namespace=cfg.inference.namespace,
            inference_app_name=inference.APP_NAME,
            dcgm_namespace=gpu.NAMESPACE,
            scrape_interval=cfg.monitoring.scrape_interval,
        ),
        alert_rules=alerts.alert_rule_groups(
            namespace=cfg.inference.namespace,
            deployment=inference.APP_NAME,
            hpa=inference.APP_NAME,
            headroom_namespace=headroom.NAMESPACE,
            headroom_deployment=headroom.APP_NAME,
        ),
        dashboards={
            DASHBOARD_FILE: dashboard.dashboard(
                namespace=cfg.inference.namespace, hpa=inference.APP_NAME
            )
        },
        alert_receivers=cfg.monitoring.alert_receivers,
        stack_file=cfg.stack_file,
    ),
    # Prometheus' volume needs the EBS CSI driver, and every scrape and the adapter need DNS: both
    # add-ons (which wait for the system nodes only).
    opts=pulumi.ResourceOptions(providers=[cluster.provider], depends_on=[addons]),
)
grafana = (
    Grafana(
        f"{name}-grafana",
        GrafanaArgs(
            namespace=monitoring.NAMESPACE,
            system_node_selector=gpu_spec.system_node_selector(),
            prometheus_url=metrics.prometheus_url,
            prometheus_pod_labels=monitoring.prometheus_server_pod_labels(),
            prometheus_port=monitoring.PROMETHEUS_CONTAINER_PORT,
            dashboard_config_map=monitoring.dashboard_config_map(DASHBOARD_FILE),
            dashboard_file=DASHBOARD_FILE,
            scrape_interval=cfg.monitoring.scrape_interval,
        ),
        opts=pulumi.ResourceOptions(providers=[cluster.provider], depends_on=[metrics]),
    )
    if cfg.monitoring.grafana
    else None
)
lb_controller = LoadBalancerController(
    f"{name}-lb-controller",
    LoadBalancerControllerArgs(
        target=cluster.pod_identity,
        cluster_name=name,
        region=cfg.region,
        vpc_id=network.vpc_id,
        system_node_selector=gpu_spec.system_node_selector(),
        # Like the autoscaler, it calls AWS (ELB, EC2) by name from its first start.
        depends_on=(node_groups.system, addons.coredns),
    ),
    opts=on_cluster,
)
model_image = InferenceImage(
    f"{name}-image",
    ImageArgs(
        repository_name=f"{name}/embeddings",
        model_id=cfg.model.id,
        model_revision=cfg.model.revision,
        prebuilt_image=cfg.inference.image,
        context=REPOSITORY_ROOT,
    ),
)
workload = Inference(
    f"{name}-inference",
    InferenceArgs(
        inference=cfg.inference,
        model=cfg.model,
        image=model_image.image_ref,
        prometheus_namespace=monitoring.NAMESPACE,
        prometheus_pod_labels=monitoring.prometheus_server_pod_labels(),
        # On destroy the NLB Service goes first, while the LB controller can still resolve and
        # reach the ELB and EC2 APIs (cluster DNS here; the NAT path through the subnets) to delete
        # the NLB, its security groups and their interfaces (README "Tear down").
        depends_on=(lb_controller, gpu_stack, addons),
        scheduled=cfg.capacity.serving_hours is not None,
    ),
    opts=on_cluster,
)
# --- Capacity ahead of load, none outside servingHours -------------------------------------------
capacity = cfg.capacity
warm_gpus = (
    GpuHeadroom(
        f"{name}-headroom",
        HeadroomArgs(
            replicas=capacity.gpu_headroom,
            inference=cfg.inference,
            image=model_image.image_ref,
            scheduled=capacity.serving_hours is not None,
        ),
        # Placeholders hold GPUs the device plugin advertises.
        opts=pulumi.ResourceOptions(providers=[cluster.provider], depends_on=[gpu_stack]),
    )
    if capacity.gpu_headroom
    else None
)
if capacity.serving_hours is not None:
    scaled = [
        ScaledDeployment(
            cfg.inference.namespace,
            inference.APP_NAME,
            cfg.inference.hpa_min_replicas,
            exact=False,
            uid=workload.deployment.metadata.uid,
        )
    ]
    if warm_gpus is not None:
        scaled.append(
            ScaledDeployment(
                headroom.NAMESPACE,
                headroom.APP_NAME,
                capacity.gpu_headroom,
                exact=True,
                uid=warm_gpus.deployment.metadata.uid,
            )
        )
    ServingSchedule(
        f"{name}-schedule",
        ScheduleArgs(
            namespace=cfg.inference.namespace,
            hours=capacity.serving_hours,
            targets=tuple(scaled),
            depends_on=(workload, *filter(None, [warm_gpus])),
        ),
        opts=on_cluster,
    )

if cfg.inference.route53_zone_id is not None and cfg.inference.endpoint_hostname is not None:
    # The name clients call (and the certificate covers) -> the NLB; AWS resources use the default
    # (stack-region) provider.
    EndpointDns(
        f"{name}-endpoint-dns",
        EndpointDnsArgs(
            zone_id=cfg.inference.route53_zone_id,
            hostname=cfg.inference.endpoint_hostname,
            target=workload.load_balancer_hostname.apply(require_hostname),
        ),
    )

# --- Cost: what the stack is billed per hour, at AWS prices read at preview ----------------------
cost = CostEstimate(f"{name}-cost", CostEstimateArgs(config=cfg, eks_version=support.pinned))

# --- Stack outputs --------------------------------------------------------------------------------
pulumi.export("clusterName", name)
pulumi.export("region", cfg.region)
pulumi.export("kubernetesVersion", cfg.cluster.kubernetes_version)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("gpuNodeGroups", [g.name for g in cfg.node_groups.gpu])

# Clients (README "Using the endpoint"): where to send requests, with which model, to which paths.
pulumi.export("endpointUrl", workload.endpoint_url)
# What endpointHostname must point at when the program does not manage the record (no
# route53ZoneId).
pulumi.export("loadBalancerHostname", workload.load_balancer_hostname)
pulumi.export(
    "openaiBaseUrl",
    workload.endpoint_url.apply(lambda url: f"{url}{contract.OPENAI_BASE_PATH}" if url else None),
)
pulumi.export("modelId", cfg.model.id)
pulumi.export("embeddingDimension", cfg.model.embedding_dimension)
pulumi.export("apiPaths", dict(contract.API_PATHS))
pulumi.export("namespace", cfg.inference.namespace)
pulumi.export("hpaName", inference.APP_NAME)
# README "Idle to zero on a schedule": when the endpoint has replicas (None: around the clock).
pulumi.export("servingHours", schedule.describe(capacity.serving_hours))
pulumi.export("prometheusUrl", metrics.prometheus_url)
# Who is notified of what: {"page": [...], "ticket": [...]}; empty: nobody (the preview warns).
pulumi.export("alertDelivery", metrics.alert_delivery)
if grafana is not None:
    # README "Using the endpoint": then open http://localhost:3000 and sign in.
    pulumi.export("grafanaPortForward", grafana.port_forward)
    pulumi.export("grafanaAdminUser", grafana.admin_user)
    pulumi.export("grafanaAdminPassword", grafana.admin_password)
pulumi.export("imageRef", model_image.image_ref)
pulumi.export("ecrRepositoryUrl", model_image.repository_url)
# USD (CNY in China) per hour, spot nodes billed at the on-demand price (the most EC2 bills them),
# so that a preview's output diff shows what a change costs, not how spot prices moved; None when
# a price was unreadable (README "Cost at preview"). hourlyCost holds every line; today's spot
# figures are in the preview message and hourlyCostAtSpotPrices, the one output that moves alone.
pulumi.export("hourlyCostFloor", cost.floor.all_on_demand)
pulumi.export("hourlyCostCeiling", cost.ceiling.all_on_demand)
if cost.idle_floor is not None:
    # Outside servingHours: no inference replica or placeholder keeps a GPU node up.
    pulumi.export("hourlyCostIdleFloor", cost.idle_floor.all_on_demand)
pulumi.export("hourlyCostAtSpotPrices", cost.spot_summary)
pulumi.export("hourlyCost", cost.summary)
if cfg.inference.api_keys:
    pulumi.export("apiKey", pulumi.Output.secret(cfg.inference.api_keys.values[0]))
