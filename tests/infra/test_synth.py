"""The offline synth: deterministic files, manifests as real YAML, masked secrets, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from infra import versions
from rehearsal import synth
from rehearsal.mockengine import ROOT, Inventory, run_function


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    assert synth.main(["dev", "--out", str(first)]) == 0
    assert synth.main(["dev", "--out", str(second)]) == 0
    return first, second


def test_two_runs_are_byte_identical(rendered: tuple[Path, Path]) -> None:
    first, second = rendered
    assert tree(first) == tree(second)
    assert {"inventory.yaml", "outputs.yaml"} <= set(tree(first))


def test_inventory_lists_every_resource(rendered: tuple[Path, Path], dev: Inventory) -> None:
    inventory = yaml.safe_load((rendered[0] / "inventory.yaml").read_text())
    assert inventory["stack"] == "dev"
    assert len(inventory["resources"]) == len(dev.resources)
    assert {(r["type"], r["name"]) for r in inventory["resources"]} == {
        (r.type, r.name) for r in dev.resources
    }


def test_charts_are_written_with_pins_and_integer_values(rendered: tuple[Path, Path]) -> None:
    (chart_file,) = [p for p in (rendered[0] / "charts").iterdir() if "autoscaler" in p.name]
    chart = yaml.safe_load(chart_file.read_text())
    assert chart["chart"] == "cluster-autoscaler"
    assert chart["repository"] == "https://kubernetes.github.io/autoscaler"
    assert chart["namespace"] == "kube-system"
    assert chart["values"]["replicaCount"] == 1
    assert isinstance(chart["values"]["replicaCount"], int)
    assert "replicaCount: 1\n" in chart_file.read_text()


def test_every_chart_object_is_written_and_linked_from_the_inventory(
    rendered: tuple[Path, Path], dev: Inventory
) -> None:
    folder = rendered[0] / "manifests" / "charts"
    written = {p.parent.name: [] for p in folder.rglob("*.yaml")}
    for path in folder.rglob("*.yaml"):
        written[path.parent.name].append(yaml.safe_load(path.read_text()))
    for render in dev.rendered:
        objects = written[f"{render.source.namespace}-{render.source.release}"]
        assert len(objects) == len(render.rendered.objects), render.source.chart
    inventory = yaml.safe_load((rendered[0] / "inventory.yaml").read_text())
    children = [r for r in inventory["resources"] if ":" in r["name"] and "manifest" in r]
    assert len(children) == len(dev.chart_resources())
    for entry in children:
        assert (rendered[0] / entry["manifest"]).is_file(), entry
    chart_doc = yaml.safe_load(
        next((rendered[0] / "charts").glob("*dcgm-exporter.yaml")).read_text()
    )
    pin = versions.DCGM_EXPORTER
    assert chart_doc["archive"] == f"charts/{pin.chart}-{pin.version}.tgz"
    assert (ROOT / chart_doc["archive"]).is_file()
    assert chart_doc["sha256"] == pin.sha256
    assert chart_doc["program_file"] == "infra/gpu.py"
    assert chart_doc["objects"] == len(written["gpu-system-dcgm-exporter"])


def test_secrets_are_masked_everywhere(rendered: tuple[Path, Path]) -> None:
    outputs = yaml.safe_load((rendered[0] / "outputs.yaml").read_text())
    assert outputs["kubeconfig"] == synth.MASK
    assert outputs["clusterName"] == "gpu-inference-dev"
    for name, content in tree(rendered[0]).items():
        assert b"certificate-authority-data" not in content, name
        assert b"get-token" not in content, name


def test_summary_shows_the_component_tree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert synth.main(["prod", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prod: ")
    assert "gpu-inference:cluster:Cluster gpu-inference-prod" in out
    assert "NodeGroup x5" in out


def kubernetes_objects() -> Inventory:
    def program() -> None:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        opts = pulumi.ResourceOptions(provider=provider)
        k8s.core.v1.Namespace("ns", metadata={"name": "inference"}, opts=opts)
        k8s.core.v1.ConfigMap(
            "cm",
            metadata={"name": "settings", "namespace": "inference"},
            data={"config.yaml": "a: 1\nb: 2\n"},
            opts=opts,
        )
        k8s.core.v1.Secret(
            "keys",
            metadata={"name": "api-keys", "namespace": "inference"},
            string_data={"keys": pulumi.Output.secret("s3cr3t-value")},
            opts=opts,
        )
        k8s.apps.v1.Deployment(
            "deploy",
            metadata={"name": "server", "namespace": "inference"},
            spec={
                "replicas": 2,
                "selector": {"matchLabels": {"app": "server"}},
                "template": {
                    "metadata": {"labels": {"app": "server"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "x@sha256:" + "0" * 64,
                                "ports": [{"containerPort": 8000}],
                            }
                        ]
                    },
                },
            },
            opts=opts,
        )

    return run_function(program)


def test_native_objects_become_one_manifest_file_each(tmp_path: Path) -> None:
    inventory = kubernetes_objects()
    synth.write(inventory, "test", tmp_path)
    files = sorted(p.name for p in (tmp_path / "manifests").iterdir())
    assert files == [
        "cluster-namespace-inference.yaml",
        "inference-configmap-settings.yaml",
        "inference-deployment-server.yaml",
        "inference-secret-api-keys.yaml",
    ]
    deployment_text = (tmp_path / "manifests" / "inference-deployment-server.yaml").read_text()
    assert deployment_text.startswith("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n")
    deployment = yaml.safe_load(deployment_text)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8000}
    ]
    configmap = (tmp_path / "manifests" / "inference-configmap-settings.yaml").read_text()
    assert "config.yaml: |\n    a: 1\n    b: 2\n" in configmap, "multi-line strings stay readable"
    secret = yaml.safe_load((tmp_path / "manifests" / "inference-secret-api-keys.yaml").read_text())
    assert secret["stringData"] == {"keys": synth.MASK}
    assert "s3cr3t" not in (tmp_path / "manifests" / "inference-secret-api-keys.yaml").read_text()
    assert inventory.k8s_manifests()[0]["apiVersion"]


def test_stale_files_are_removed_and_others_kept(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "stale.yaml").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    synth.write(kubernetes_objects(), "test", tmp_path)
    assert not (tmp_path / "manifests" / "stale.yaml").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rehearsal.synth", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bad_config_exits_non_zero_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    result = run_cli("dev", "--out", str(tmp_path), "--set", "hpaMaxReplicas=100")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Pulumi.dev.yaml: gpu-inference:hpaMaxReplicas = 100")
    assert not (tmp_path / "inventory.yaml").exists()


def test_unknown_stack_is_a_clean_error(tmp_path: Path) -> None:
    result = synth.main(["staging", "--out", str(tmp_path)])
    assert result == 2
