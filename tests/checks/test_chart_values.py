"""The gate on the full render: chart values read by their charts, chart objects schema-validated,
the render checks, and checkov skips that never cover the program's own workloads."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from checks.chart_values import check_chart_values, unread_keys
from checks.checkov_scan import SKIPS_FILE, load_skips
from checks.manifests import check_manifests
from checks.report import CheckResult
from checks.synth_render import StackRender
from infra import charts as infra_charts
from infra import monitoring, versions
from rehearsal import charts, synth
from rehearsal.mockengine import run_stack


def render_stack(tmp_path: Path, stack: str = "dev") -> StackRender:
    out = tmp_path / stack
    synth.write(run_stack(stack), stack, out)
    return StackRender(stack, out)


@pytest.fixture(scope="module")
def dev_render(tmp_path_factory: pytest.TempPathFactory) -> StackRender:
    return render_stack(tmp_path_factory.mktemp("synth"))


def test_the_real_renders_pass(dev_render: StackRender) -> None:
    result = check_chart_values([dev_render])
    assert result.passed, result.findings
    assert result.inspected == len(versions.HELM_CHARTS), "dev deploys every pinned chart"


def test_a_key_the_chart_does_not_read_fails_naming_chart_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = monitoring.prometheus_values

    def planted(args: Any) -> dict[str, Any]:
        values = real(args)
        values["server"]["retentionn"] = "3d"
        return values

    monkeypatch.setattr(monitoring, "prometheus_values", planted)
    result = check_chart_values([render_stack(tmp_path)])
    assert not result.passed
    [finding] = [f for f in result.findings if "retentionn" in str(f)]
    text = str(finding)
    assert "chart prometheus 27.52.0" in text
    assert "`server.retentionn`" in text
    assert "infra/monitoring.py" in text


@pytest.mark.parametrize(
    ("values", "unread"),
    [
        ({"server": {"nodeSelector": {"any/label": "x"}}}, []),  # free-form: `{}` by default
        ({"nodeSelector": {"a": "b"}}, ["nodeSelector.a"]),  # prometheus has none at the top
        ({"server": {"extraArgs": {"web.enable-lifecycle": ""}}}, []),
        ({"serverFiles": {"my_rules.yml": {"groups": []}}}, []),  # documented free-form map
        ({"kube-state-metrics": {"metricLabelsAllowlist": ["nodes=[a]"]}}, []),  # subchart
        (
            {"kube-state-metrics": {"metricLabelsAlowlist": []}},
            ["kube-state-metrics.metricLabelsAlowlist"],
        ),
        ({"nodeSelectr": {"a": "b"}}, ["nodeSelectr.a"]),
        ({"server": {"tolerations": [{"key": "x"}]}}, []),  # lists are values
    ],
)
def test_unread_keys(values: dict[str, Any], unread: list[str]) -> None:
    archive = infra_charts.archive(versions.PROMETHEUS)
    chart = charts.load(archive)
    templates = charts.template_sources(archive)
    assert unread_keys("prometheus", values, chart.merge_values({}), templates) == unread


def test_a_key_only_a_template_reads_is_read() -> None:
    templates = {"x/templates/a.yaml": "{{ .Values.only.inTemplate }}"}
    assert unread_keys("x", {"only": {"inTemplate": 1}}, {}, templates) == []
    assert unread_keys("x", {"only": {"other": 1}}, {}, templates) == ["only.other"]


def _edit_chart_doc(render: StackRender, chart: str, **changes: Any) -> None:
    for path in render.charts_dir.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["chart"] == chart:
            doc.update(changes)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            return
    raise LookupError(chart)


def test_render_problems_of_v4_charts_fail(tmp_path: Path) -> None:
    render = render_stack(tmp_path)
    _edit_chart_doc(
        render,
        "dcgm-exporter",
        generated_at_install=["Secret gpu-system/x.data.key"],
        duplicates_dropped=["ConfigMap gpu-system/y (identical copy)"],
        unknown_at_preview=["values.image.tag"],
    )
    _edit_chart_doc(render, "prometheus-adapter", post_renderer=[])
    result = check_chart_values([render])
    text = "\n".join(str(f) for f in result.findings)
    assert "changes on every render" in text
    assert "two resources with one URN" in text
    assert "unknown at preview" in text
    assert "first preview shows apiregistration.k8s.io/v1beta1" in text


def test_chart_objects_are_schema_validated(tmp_path: Path) -> None:
    render = render_stack(tmp_path)
    [daemonset] = render.manifests_dir.glob("charts/gpu-system-dcgm-exporter/*daemonset*.yaml")
    obj = yaml.safe_load(daemonset.read_text())
    obj["spec"]["template"]["spec"]["tolerration"] = []
    daemonset.write_text(yaml.safe_dump(obj))
    result = check_manifests(render.manifests_dir, "1.34", "dev")
    [finding] = result.findings
    assert "DaemonSet gpu-system/dcgm-exporter" in str(finding)
    assert "tolerration" in str(finding)
    assert result.inspected > 80  # the program's objects and every chart's


def test_checkov_skips_never_cover_the_program_workloads(dev_render: StackRender) -> None:
    skips = load_skips(SKIPS_FILE, CheckResult("skips"))
    own = [
        f"{o['kind']}.{o['metadata'].get('namespace', 'default')}.{o['metadata']['name']}"
        for _, o in dev_render.manifests()
        if "/charts/" not in str(_)
    ]
    assert own
    for skip in skips:
        covered = [name for name in own if fnmatch.fnmatchcase(name, skip.resource)]
        if skip.check_id == "CKV_K8S_11":  # no CPU limit on the inference pods, argued in the file
            continue
        assert covered == [], f"{skip.check_id} {skip.resource} covers {covered}"


def test_the_gate_fails_on_an_unpinned_image_planted_in_the_inference_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from checks.policy_check import check_policies
    from infra import image

    real = image.InferenceImage._build

    def by_tag(self: image.InferenceImage, name: str, args: image.ImageArgs) -> Any:
        real(self, name, args)
        return pulumi.Output.concat(self.repository.repository_url, ":", "v1")

    monkeypatch.setattr(image.InferenceImage, "_build", by_tag)
    result = check_policies([render_stack(tmp_path)])
    texts = [str(f) for f in result.findings]
    assert len(texts) == 1, texts
    assert "images-pinned-by-digest" in texts[0]
    assert "Deployment inference/embeddings" in texts[0]
    assert "has no @sha256 digest" in texts[0]
