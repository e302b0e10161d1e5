"""The deploy rehearsal: every pinned chart rendered with the program's values, and cross-checks on
what the charts really render (not on what we assume they render)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from infra import adapter_rules, gpu, gpu_spec, image, inference, scrape, versions
from infra import charts as infra_charts
from infra.charts import ChartArchiveError
from rehearsal import charts, synth
from rehearsal.charts import pin_of
from rehearsal.mockengine import (
    CHART_V4,
    ROOT,
    ChartRender,
    Inventory,
    Resource,
    run_function,
    run_stack,
)

POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


def objects(render: ChartRender, kind: str) -> list[dict[str, Any]]:
    return [o for o in render.rendered.objects if o["kind"] == kind]


def one(render: ChartRender, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(render, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{render.source.chart}: {kind} {name}: {len(found)} found"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


# --- Archives and renders -------------------------------------------------------------------------


@pytest.mark.parametrize("pin", versions.HELM_CHARTS, ids=lambda p: p.chart)
def test_every_pinned_chart_is_vendored_with_its_pinned_bytes(pin: versions.HelmChart) -> None:
    archive = ROOT / "charts" / f"{pin.chart}-{pin.version}.tgz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == pin.sha256
    meta = charts.load(archive).metadata
    assert (meta["name"], str(meta["version"])) == (pin.chart, pin.version)


def test_the_program_installs_the_archives_the_rehearsal_renders(inventory: Inventory) -> None:
    """Each chart resource's `chart` input, resolved from the working directory as Helm resolves
    a local chart, is the file the rehearsal rendered: one file, its bytes the pinned ones."""
    assert len(inventory.rendered) == len(inventory.charts())
    for render in inventory.rendered:
        inputs = render.resource.inputs
        named = Path(inputs["chart"])
        assert not named.is_absolute(), f"{render.resource.name}: {named} depends on the checkout"
        assert named.resolve() == render.source.archive.resolve(), render.resource.name
        pin = pin_of(named)
        assert named.resolve() == (ROOT / "charts" / pin.archive_name).resolve()
        assert hashlib.sha256(named.read_bytes()).hexdigest() == pin.sha256
        # A repository would make a Release download instead; a version means nothing for a file.
        assert "repositoryOpts" not in inputs, render.resource.name
        assert "version" not in inputs, render.resource.name


def test_under_pulumi_the_chart_path_resolves_from_the_main_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pulumi up` runs the program, and the Kubernetes provider, in Pulumi.yaml's `main` folder
    (pulumi/pulumi pkg/engine/project.go getPwdMain): the path must resolve from there too."""
    main = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["main"]
    monkeypatch.chdir(ROOT / main)
    pin = versions.PROMETHEUS
    path = infra_charts.chart_path(pin)
    assert path == f"../charts/{pin.archive_name}"
    assert (ROOT / main / path).resolve() == (ROOT / "charts" / pin.archive_name).resolve()


def test_chart_archives_stay_out_of_the_image_build_context() -> None:
    """.dockerignore keeps charts/ out of what Docker sends and of the tag's content digest
    (infra/image.py), so a chart bump neither rebuilds nor re-tags the model image."""
    context = list(image.context_files(ROOT))
    assert "service/contract.py" in context
    assert not [f for f in context if f.startswith("charts/") or f.endswith(".tgz")]


def _vendored_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "charts"
    copy.mkdir()
    for pin in versions.HELM_CHARTS:
        (copy / pin.archive_name).write_bytes((ROOT / "charts" / pin.archive_name).read_bytes())
    return copy


def test_a_missing_archive_stops_the_program_before_any_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _vendored_copy(tmp_path)
    (copy / versions.DCGM_EXPORTER.archive_name).unlink()
    monkeypatch.setattr(infra_charts, "CHARTS_DIR", copy)
    with pytest.raises(ChartArchiveError, match=r"chart dcgm-exporter 4\.8\.2 \(pinned") as caught:
        run_stack("dev")
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]
    assert synth.main(["dev", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no archive dcgm-exporter-4.8.2.tgz" in err
    assert "make charts" in err


def test_an_archive_with_other_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed file (a bad merge, a Git LFS pointer, a hand edit) is not what was reviewed."""
    copy = _vendored_copy(tmp_path)
    with (copy / versions.GRAFANA.archive_name).open("ab") as archive:
        archive.write(b"\0")
    monkeypatch.setattr(infra_charts, "CHARTS_DIR", copy)
    with pytest.raises(
        ChartArchiveError, match=f"infra/versions.py pins {versions.GRAFANA.sha256}"
    ):
        run_stack("dev")


def _chart_program(**inputs: Any) -> Callable[[], None]:
    def program() -> None:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        k8s.helm.v4.Chart(
            "chart", k8s.helm.v4.ChartArgs(**inputs), opts=pulumi.ResourceOptions(provider=provider)
        )

    return program


def test_the_rehearsal_renders_only_pinned_archives(tmp_path: Path) -> None:
    scaffold = _scaffold(tmp_path)
    with pytest.raises(charts.ChartError, match=r"not a chart archive pinned in infra/versions"):
        run_function(_chart_program(chart=str(scaffold), name="demo", namespace="apps"))
    pinned = infra_charts.chart_path(versions.METRICS_SERVER)
    repository = k8s.helm.v4.RepositoryOptsArgs(repo=versions.METRICS_SERVER.repository)
    with pytest.raises(charts.ChartError, match="names the chart repository"):
        run_function(_chart_program(chart=pinned, name="m", repository_opts=repository))


def test_every_chart_resource_is_rendered_and_v4_objects_are_registered(
    inventory: Inventory,
) -> None:
    assert {r.resource.urn for r in inventory.rendered} == {c.urn for c in inventory.charts()}
    for render in inventory.rendered:
        assert render.rendered.objects, render.source.chart
        children = [r for r in inventory.chart_resources() if r.rendered_by == render.resource.urn]
        if render.resource.type == CHART_V4:
            assert len(children) == len(render.rendered.objects)
            for child in children:
                meta = child.inputs["metadata"]
                scoped = "/".join(p for p in (meta.get("namespace"), meta["name"]) if p)
                assert child.name == f"{render.resource.name}:{scoped}"
                assert child.parent == render.resource.urn
                assert child.provider == render.resource.provider
        else:
            assert children == []  # Helm creates a v3 Release's objects, not the engine


def test_chart_objects_land_in_the_chart_namespace_unless_cluster_scoped(
    inventory: Inventory,
) -> None:
    for render in inventory.rendered:
        cluster_crds = {
            o["spec"]["names"]["kind"]
            for o in render.rendered.objects
            if o["kind"] == "CustomResourceDefinition" and o["spec"]["scope"] == "Cluster"
        }
        for obj in render.rendered.objects:
            namespace = obj["metadata"].get("namespace")
            if obj["kind"] in cluster_crds:
                assert namespace is None, charts.object_key(obj)
                continue
            assert namespace or obj["kind"] in {
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "APIService",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
                "IngressClass",
            }, charts.object_key(obj)


def _scaffold(tmp_path: Path) -> Path:
    """`helm create`'s chart, packaged: an archive no pin names."""
    import helm_python as helm

    (tmp_path / "src").mkdir()
    chart = helm.Chart.create("scaffold", tmp_path / "src")
    chart.save(tmp_path)
    return tmp_path / f"scaffold-{chart.metadata['version']}.tgz"


def test_hooks_are_dropped_as_helm_v4_chart_drops_them(tmp_path: Path) -> None:
    archive = _scaffold(tmp_path)  # `helm create` ships a test-connection Pod hook
    source = charts.ChartSource(archive, "demo", "apps", {})
    rendered = charts.render(source)
    assert [h["kind"] for h in rendered.hooks] == ["Pod"]
    assert "helm.sh/hook" in rendered.hooks[0]["metadata"]["annotations"]
    assert all(
        "helm.sh/hook" not in (o["metadata"].get("annotations") or {}) for o in rendered.objects
    )
    assert {o["kind"] for o in rendered.objects} >= {"Deployment", "Service"}


def test_values_files_merge_before_values_and_their_nulls_delete_defaults(tmp_path: Path) -> None:
    archive = _scaffold(tmp_path)
    base = charts.ChartSource(archive, "demo", "apps", {"resources": {"limits": {"memory": "1Gi"}}})
    deleting = charts.ChartSource(
        archive,
        "demo",
        "apps",
        {"resources": {"limits": {"memory": "1Gi", "cpu": "1"}}},
        value_files=("resources:\n  limits:\n    cpu: 2\n",),
    )
    assert charts.merged_values(deleting)["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert charts.merged_values(base)["resources"]["limits"] == {"memory": "1Gi"}


# --- What the render exposed, fixed ---------------------------------------------------------------


def test_dcgm_exporter_has_no_cpu_limit_although_the_chart_sets_one(inventory: Inventory) -> None:
    render = inventory.render_of("dcgm-exporter")
    default = charts.load(render.source.archive).values["resources"]
    assert "cpu" in default["limits"], "the chart no longer sets a CPU limit: drop the deletion"
    container = pod_spec(one(render, "DaemonSet"))["containers"][0]
    assert "cpu" not in container["resources"]["limits"]
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert container["resources"]["requests"]["cpu"] == "100m"
    # Through a values file: a None in the values map never reaches Helm (pulumi/pulumi#12178).
    assert render.source.value_files == ("resources:\n  limits:\n    cpu: null\n",)
    assert gpu.DCGM_EXPORTER_DELETED_DEFAULTS == ("resources.limits.cpu",)


def test_adapter_apiservice_is_v1_on_a_first_preview_too(inventory: Inventory) -> None:
    render = inventory.render_of("prometheus-adapter")
    assert one(render, "APIService")["apiVersion"] == "apiregistration.k8s.io/v1"
    assert charts.first_preview_differences(render.source) == []
    without = charts.ChartSource(**{**render.source.__dict__, "post_renderer": ()})
    [difference] = charts.first_preview_differences(without)
    assert "first preview shows apiregistration.k8s.io/v1beta1" in difference


def test_random_chart_data_is_masked_and_listed(inventory: Inventory) -> None:
    render = inventory.render_of("aws-load-balancer-controller")
    assert render.resource.type == "kubernetes:helm.sh/v3:Release"
    secret = one(render, "Secret", "aws-load-balancer-tls")
    assert set(secret["data"].values()) == {charts.GENERATED}
    assert any("caBundle" in path for path in render.rendered.generated)
    for other in inventory.rendered:
        if other.registered:
            assert other.rendered.generated == (), other.source.chart


# --- Cross-checks on the rendered objects ---------------------------------------------------------


@pytest.mark.parametrize("chart", ["nvidia-device-plugin", "dcgm-exporter"])
def test_gpu_agents_tolerate_the_taint_and_run_on_gpu_nodes_only(
    inventory: Inventory, chart: str
) -> None:
    render = inventory.render_of(chart)
    daemonsets = objects(render, "DaemonSet")
    assert daemonsets
    for daemonset in daemonsets:
        spec = pod_spec(daemonset)
        assert gpu_spec.toleration() in spec["tolerations"], daemonset["metadata"]["name"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        for term in terms["nodeSelectorTerms"]:
            keys = {e["key"] for e in term["matchExpressions"]}
            assert keys & set(gpu_spec.GPU_NODE_LABELS), daemonset["metadata"]["name"]


def discovered_targets(job: dict[str, Any], workload: dict[str, Any]) -> list[tuple[str, int]]:
    """(container, port) targets a Prometheus pod-role job keeps for a running pod of a workload:
    the meta labels kubernetes_sd gives each container port, through the job's keep/drop rules
    (regex anchored, source labels joined by `;`, as Prometheus relabels)."""
    [sd] = job["kubernetes_sd_configs"]
    namespace = workload["metadata"]["namespace"]
    if namespace not in sd["namespaces"]["names"]:
        return []
    template = workload["spec"]["template"]
    pod_labels = {
        f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
        for k, v in template["metadata"].get("labels", {}).items()
    }
    kept = []
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            meta = {
                **pod_labels,
                "__meta_kubernetes_namespace": namespace,
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
            }
            if all(_relabel_keeps(rule, meta) for rule in job["relabel_configs"]):
                kept.append((container["name"], port["containerPort"]))
    return kept


def _relabel_keeps(rule: dict[str, Any], meta: dict[str, str]) -> bool:
    value = ";".join(meta.get(label, "") for label in rule.get("source_labels", []))
    regex = rule.get("regex", "(.*)")
    # YAML reads `regex: true` as a boolean; Prometheus as the string "true".
    regex = str(regex).lower() if isinstance(regex, bool) else str(regex)
    matches = re.fullmatch(regex, value) is not None
    return {"keep": matches, "drop": not matches}.get(rule["action"], True)


def test_dcgm_pods_are_what_the_deployed_scrape_job_selects(inventory: Inventory) -> None:
    render = inventory.render_of("dcgm-exporter")
    daemonset = one(render, "DaemonSet")
    spec = pod_spec(daemonset)
    jobs = {
        j["job_name"]: j for j in _prometheus_config(inventory)["prometheus.yml"]["scrape_configs"]
    }
    assert discovered_targets(jobs[scrape.DCGM_JOB], daemonset) == [("exporter", 9400)]
    service = one(render, "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [9400]
    # The exporter is not scraped twice through the inference job, and vice versa.
    assert discovered_targets(jobs[scrape.INFERENCE_JOB], daemonset) == []
    deployment = server_deployment(inventory)
    assert discovered_targets(jobs[scrape.DCGM_JOB], deployment) == []
    assert len(discovered_targets(jobs[scrape.INFERENCE_JOB], deployment)) == 1
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounted = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    pod_resources = [n for n, p in host_paths.items() if p == gpu.KUBELET_POD_RESOURCES_PATH]
    assert pod_resources
    assert pod_resources[0] in mounted


def _prometheus_config(inventory: Inventory) -> dict[str, Any]:
    render = inventory.render_of("prometheus")
    configmap = one(render, "ConfigMap", "prometheus-server")
    return {k: yaml.safe_load(v) for k, v in configmap["data"].items()}


def test_prometheus_server_configmap_holds_our_scrape_jobs_and_alert_rules(
    inventory: Inventory,
) -> None:
    data = _prometheus_config(inventory)
    jobs = {j["job_name"]: j for j in data["prometheus.yml"]["scrape_configs"]}
    for name in (scrape.INFERENCE_JOB, scrape.DCGM_JOB):
        assert name in jobs, sorted(jobs)
    dcgm_namespaces = jobs[scrape.DCGM_JOB]["kubernetes_sd_configs"][0]["namespaces"]["names"]
    assert dcgm_namespaces == [gpu.NAMESPACE]
    rule_files = data["prometheus.yml"]["rule_files"]
    assert any(f.endswith("alerting_rules.yml") for f in rule_files)
    deployed = {r["alert"] for g in data["alerting_rules.yml"]["groups"] for r in g["rules"]}
    assert {"InferenceUnavailable", "InferencePodsNotReady", "GPUXidError"} <= deployed


def test_adapter_config_holds_exactly_the_contract_rules_and_points_at_prometheus(
    inventory: Inventory,
) -> None:
    adapter = inventory.render_of("prometheus-adapter")
    config = yaml.safe_load(one(adapter, "ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    assert config["rules"] == adapter_rules.adapter_rules()["custom"]
    args = pod_spec(one(adapter, "Deployment"))["containers"][0]["args"]
    [url] = [a.split("=", 1)[1] for a in args if a.startswith("--prometheus-url=")]
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    service_name, namespace = host.split(".")[:2]
    prometheus = inventory.render_of("prometheus")
    service = one(prometheus, "Service", service_name)
    assert service["metadata"]["namespace"] == namespace
    assert int(port or 80) in {p["port"] for p in service["spec"]["ports"]}
    apiservice = one(adapter, "APIService")
    assert apiservice["spec"]["service"]["name"] == one(adapter, "Service")["metadata"]["name"]


def test_cluster_autoscaler_gets_priority_expander_its_configmap_and_discovery(
    inventory: Inventory,
) -> None:
    render = inventory.render_of("cluster-autoscaler")
    container = pod_spec(one(render, "Deployment"))["containers"][0]
    command = container.get("command", []) + container.get("args", [])
    cluster = inventory.one("aws:eks/cluster:Cluster").inputs["name"]
    assert "--expander=priority" in command
    assert (
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
        f"k8s.io/cluster-autoscaler/{cluster}"
    ) in command
    configmap = one(render, "ConfigMap", "cluster-autoscaler-priority-expander")
    priorities = yaml.safe_load(configmap["data"]["priorities"])
    assert max(priorities) == 50
    assert priorities[1] == [".*"]


def test_pod_identity_associations_name_service_accounts_the_charts_render(
    inventory: Inventory,
) -> None:
    rendered = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in inventory.cluster_objects()
        if o["kind"] == "ServiceAccount"
    }
    associations = inventory.of_type(POD_IDENTITY)
    assert associations
    for association in associations:
        key = (association.inputs["namespace"], association.inputs["serviceAccount"])
        assert key in rendered, (
            f"{association.name}: {key} is not rendered; have {sorted(rendered)}"
        )


def test_chart_workloads_are_registered_with_their_images(inventory: Inventory) -> None:
    children: list[Resource] = inventory.chart_resources()
    workloads = [r for r in children if r.type.startswith("kubernetes:apps/v1:")]
    assert {r.type for r in workloads} >= {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:apps/v1:StatefulSet",
    }
    for workload in workloads:
        spec = workload.inputs["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert ":" in container["image"].rsplit("/", 1)[-1], json.dumps(container)[:200]


def test_every_chart_container_requests_cpu_and_memory(inventory: Inventory) -> None:
    """A container without requests makes its pod BestEffort: the first the kubelet evicts under
    node pressure. Several charts set none by default; the program sets them."""
    for render in inventory.rendered:
        for workload in render.rendered.objects:
            if workload["kind"] not in {"Deployment", "DaemonSet", "StatefulSet"}:
                continue
            spec = pod_spec(workload)
            for container in spec.get("initContainers", []) + spec["containers"]:
                requests = (container.get("resources") or {}).get("requests") or {}
                where = f"{charts.object_key(workload)} container {container['name']}"
                assert {"cpu", "memory"} <= set(requests), where


def test_values_a_chart_cannot_render_fail_naming_the_chart(tmp_path: Path) -> None:
    source = charts.ChartSource(_scaffold(tmp_path), "demo", "apps", {"image": "not-a-map"})
    with pytest.raises(charts.ChartError, match=r"chart scaffold \S+ \(release demo\) does not"):
        charts.render(source)


def test_install_hooks_are_kept_for_helm_and_test_hooks_are_not() -> None:
    def hook(kind: str, when: str) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"name": kind, "annotations": {"helm.sh/hook": when}}}

    hooks = [
        hook("Job", "pre-install,pre-upgrade"),
        hook("Pod", "test"),
        hook("Secret", "test, post-install"),
    ]
    assert [h["kind"] for h in charts.install_hooks(hooks)] == ["Job", "Secret"]


def test_kube_state_metrics_is_scraped_by_the_charts_service_endpoints_job(
    inventory: Inventory,
) -> None:
    """The alert rules and the dashboard read kube-state-metrics; nothing of ours scrapes it: the
    Prometheus chart's default `kubernetes-service-endpoints` job does, by annotation."""
    config = _prometheus_config(inventory)["prometheus.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    job = jobs["kubernetes-service-endpoints"]
    service = one(inventory.render_of("prometheus"), "Service", "prometheus-kube-state-metrics")
    annotation = "__meta_kubernetes_service_annotation_prometheus_io_scrape"
    meta = {
        annotation: service["metadata"]["annotations"]["prometheus.io/scrape"],
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
    }
    keep_rules = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert any(annotation in r["source_labels"] for r in keep_rules)
    assert all(_relabel_keeps(r, meta) for r in keep_rules)


def test_our_scrape_targets_are_not_scraped_twice_through_annotations(
    inventory: Inventory,
) -> None:
    dcgm = one(inventory.render_of("dcgm-exporter"), "DaemonSet")
    ours = [dcgm, server_deployment(inventory)]
    ours += [one(inventory.render_of("dcgm-exporter"), "Service")]
    for obj in ours:
        annotations = {
            **(obj["metadata"].get("annotations") or {}),
            **(
                (obj.get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations")
                or {}
            ),
        }
        assert "prometheus.io/scrape" not in annotations, charts.object_key(obj)


def test_prometheus_sends_alerts_to_the_alertmanager_the_chart_renders(
    inventory: Inventory,
) -> None:
    config = _prometheus_config(inventory)["prometheus.yml"]
    [target] = config["alerting"]["alertmanagers"]
    statefulset = one(inventory.render_of("prometheus"), "StatefulSet", "prometheus-alertmanager")
    template = statefulset["spec"]["template"]
    meta = {
        f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
        for k, v in template["metadata"]["labels"].items()
    }
    meta["__meta_kubernetes_namespace"] = statefulset["metadata"]["namespace"]
    ports = [p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
    kept = [
        port
        for port in ports
        if all(
            _relabel_keeps(r, {**meta, "__meta_kubernetes_pod_container_port_number": str(port)})
            for r in target["relabel_configs"]
        )
    ]
    assert kept == [9093]


def server_deployment(inventory: Inventory) -> dict[str, Any]:
    """The inference Deployment (prod also has the warm-GPU placeholders' one)."""
    (found,) = [
        r.inputs
        for r in inventory.of_type("kubernetes:apps/v1:Deployment")
        if r.inputs["metadata"]["name"] == inference.APP_NAME
    ]
    return found
