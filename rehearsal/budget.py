"""A stack's scale-up time budget, read from its rendered objects: `python -m rehearsal.budget`.

From load arriving to a new replica serving it, each step either comes from what the stack renders
(scrape interval, HPA behaviour, autoscaler flags, probes, load balancer health checks, the
placeholders' grace period), or is measured here (the server's cold start on a model of the served
model's size: bench/startup.py), or is cited from upstream where nothing here can measure it (HPA
sync period, node boot, image pull throughput). Periodic steps count one full period: the load may
arrive just after a tick. The synth writes the table to build/synth/<stack>/scaleup-budget.md, so a
pull request that slows a step shows it in the diff; tests/infra/test_budget.py recomputes the
README's table from the rendered stacks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from infra import headroom, inference, scrape

FILE: Final = "scaleup-budget.md"
"""What the synth writes next to the manifests."""
RESULTS: Final = Path(__file__).resolve().parent.parent / "bench" / "results"
COLD_START_FILE: Final = RESULTS / "cpu-2c-amd-epyc" / "coldstart.json"
"""The committed `python -m bench.startup` result the budget's model-load step uses."""

HPA_SYNC_SECONDS: Final = 15
"""kube-controller-manager `--horizontal-pod-autoscaler-sync-period`, default 15 s (Kubernetes docs,
"Horizontal Pod Autoscaling": "the interval is set by the --horizontal-pod-autoscaler-sync-period
parameter ... default interval is 15 seconds"); EKS runs the controller manager and exposes none of
its flags."""
AUTOSCALER_DEFAULT_SCAN_SECONDS: Final = 10
"""cluster-autoscaler `--scan-interval` default (config/const.go DefaultScanInterval, 1.34 and
1.35)."""
NODE_READY_SECONDS: Final = 240
"""Autoscaler request to a GPU node that takes pods: cluster-autoscaler's FAQ ("How fast is HPA when
combined with CA?", cluster-autoscaler-1.34.1): "3 to 4 minutes from CA request to when pods can be
scheduled on newly created nodes" (measured on GCE; the upper end taken). Spot fulfilment, the
NVIDIA AMI's boot and the device plugin advertising the GPU are not measured on EKS here."""
IMAGE_COMPRESSED_BYTES: Final = 5_600_000_000
"""The server image's compressed layers (README "The server image": ~5.6 GB cold pull)."""
PULL_BYTES_PER_SECOND: Final = 9_354_342_327 / 130.813
"""Default containerd on an EKS AL2023 node, from ECR: 9,354,342,327 bytes "Successfully pulled
... in 2m10.813s" (aws-samples/karpenter-blueprints blueprints/soci-snapshotter/README.md at
529b88cf, the non-SOCI baseline on gp3 at 1,000 MiB/s): 71.5 MB/s."""


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    basis: str
    """rendered (with where), measured (with what) or cited (with the source)."""
    cold_only: bool = False
    """On the path only without a warm placeholder (a new node and a fresh image pull)."""
    warm_only: bool = False
    estimate: str | None = None
    """Why the number is an estimate rather than this stack's (another platform, another image, a
    CPU instead of the GPU); the table labels it."""


@dataclass(frozen=True)
class Budget:
    stack: str
    steps: tuple[Step, ...]
    headroom: int
    """The stack's gpuHeadroom (placeholders rendered)."""

    def total(self, warm: bool) -> float:
        return sum(s.seconds for s in self.steps if not (s.cold_only if warm else s.warm_only))


# --- Reading rendered objects -----------------------------------------------------------------


def find(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    found = [o for o in objects if o.get("kind") == kind and o["metadata"].get("name") == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name} in the render, found {len(found)}")
    return found[0]


def find_optional(
    objects: Iterable[Mapping[str, Any]], kind: str, name: str
) -> Mapping[str, Any] | None:
    try:
        return find(objects, kind, name)
    except LookupError:
        return None


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def flags(container: Mapping[str, Any]) -> dict[str, str]:
    """`--name=value` arguments of a container's command and args."""
    found = {}
    for arg in [*container.get("command", []), *container.get("args", [])]:
        match = re.fullmatch(r"--([a-z0-9-]+)=(.*)", str(arg))
        if match:
            found[match[1]] = match[2]
    return found


def seconds(duration: str) -> float:
    """A Go or Prometheus duration ("30s", "1m", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _scrape_interval(objects: Sequence[Mapping[str, Any]]) -> float:
    config = yaml.safe_load(
        find(objects, "ConfigMap", "prometheus-server")["data"]["prometheus.yml"]
    )
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == scrape.INFERENCE_JOB]
    interval = job.get("scrape_interval") or config["global"]["scrape_interval"]
    return seconds(interval)


def only_container(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    (found,) = pod_template(workload)["containers"]
    return found


def cold_start() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(COLD_START_FILE.read_text())
    return data


# --- The budget -------------------------------------------------------------------------------


def budget(stack: str, objects: Sequence[Mapping[str, Any]]) -> Budget:
    server = find(objects, "Deployment", inference.APP_NAME)
    hpa = find(objects, "HorizontalPodAutoscaler", inference.APP_NAME)
    nlb = find(objects, "Service", f"{inference.APP_NAME}-nlb")
    autoscaler = flags(only_container(find(objects, "Deployment", "cluster-autoscaler")))
    adapter = find(objects, "Deployment", "prometheus-adapter")
    placeholders = find_optional(objects, "Deployment", headroom.APP_NAME)
    container = only_container(server)
    annotations = nlb["metadata"]["annotations"]
    lb = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-"
    scan = seconds(autoscaler.get("scan-interval", f"{AUTOSCALER_DEFAULT_SCAN_SECONDS}s"))
    delay = seconds(autoscaler.get("new-pod-scale-up-delay", "0s"))
    relist = flags(only_container(adapter))["metrics-relist-interval"]
    grace = (
        pod_template(placeholders)["terminationGracePeriodSeconds"]
        if placeholders is not None
        else headroom.GRACE_SECONDS
    )
    measured = cold_start()
    interval, threshold = (
        int(annotations[f"{lb}interval"]),
        int(annotations[f"{lb}healthy-threshold"]),
    )
    steps = (
        Step(
            "load shows in a scraped sample (in-flight requests per pod)",
            _scrape_interval(objects),
            "rendered: Prometheus scrape_interval of the inference job",
        ),
        Step(
            "prometheus-adapter answers the HPA",
            0,
            f"rendered: queries Prometheus per request; its relist ({relist}) only delays a new "
            "pod's first series",
        ),
        Step("HPA sync", HPA_SYNC_SECONDS, "cited: kube-controller-manager default, fixed on EKS"),
        Step(
            "HPA scale-up stabilisation",
            hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"],
            "rendered: HPA behavior.scaleUp",
        ),
        Step(
            "cluster-autoscaler sees the pending pod",
            scan + delay,
            "rendered: --scan-interval (default 10 s) + --new-pod-scale-up-delay",
            cold_only=True,
        ),
        Step(
            "spot GPU node: launch, boot, join, GPU allocatable",
            NODE_READY_SECONDS,
            "cited: cluster-autoscaler FAQ, 3-4 min (GCE)",
            cold_only=True,
            estimate="a GCE figure; no EKS GPU node was booted",
        ),
        Step(
            "image pull (5.6 GB compressed)",
            round(IMAGE_COMPRESSED_BYTES / PULL_BYTES_PER_SECOND),
            "cited: 71.5 MB/s, default containerd from ECR (karpenter-blueprints SOCI guide)",
            cold_only=True,
            estimate="another image's pull throughput",
        ),
        Step(
            "preempt a placeholder (GPU node up, image present)",
            grace,
            "rendered: placeholder terminationGracePeriodSeconds",
            warm_only=True,
        ),
        Step(
            "container start, model load and warm-up",
            round(measured["ready_s"], 1),
            f"measured: bench/startup.py on {measured['machine']} (CPU; gte-large-zh-sized model)",
            estimate="measured on a CPU; a GPU adds CUDA start-up and runs a bigger warm-up",
        ),
        Step(
            "kubelet sees /ready (startup probe period)",
            container["startupProbe"]["periodSeconds"],
            "rendered: startupProbe.periodSeconds",
        ),
        Step(
            "readiness probe passes",
            container["readinessProbe"]["periodSeconds"],
            "rendered: readinessProbe.periodSeconds",
        ),
        Step(
            "NLB marks the target healthy (pod readiness gate)",
            interval * threshold,
            "rendered: health-check interval x healthy threshold",
        ),
    )
    return Budget(stack=stack, steps=steps, headroom=_headroom(objects, placeholders))


def _headroom(objects: Sequence[Mapping[str, Any]], placeholders: Mapping[str, Any] | None) -> int:
    """The placeholders' count: the Deployment's, or with servingHours (created at zero) what the
    schedule's converge Job sets inside the windows (`gpu-headroom/embeddings-headroom=N`)."""
    if placeholders is None:
        return 0
    declared = int(placeholders["spec"].get("replicas", 0))
    target = f"{headroom.NAMESPACE}/{headroom.APP_NAME}="
    for job in (o for o in objects if o.get("kind") == "Job"):
        for arg in only_container(job).get("command", []):
            if str(arg).startswith(target):
                return int(str(arg).removeprefix(target))
    return declared


def _fmt(value: float) -> str:
    return f"{value:g}"


def table(budgets: Sequence[Budget]) -> str:
    """The README's table: one row per step, one column per stack."""
    head = (
        "| Step | "
        + " | ".join(f"{b.stack} (s)" for b in budgets)
        + " | Where the number comes from |"
    )
    rule = "| --- | " + " | ".join("---:" for _ in budgets) + " | --- |"
    rows = [head, rule]
    for index, step in enumerate(budgets[0].steps):
        mark = " (no headroom)" if step.cold_only else " (headroom)" if step.warm_only else ""
        values = " | ".join(_fmt(b.steps[index].seconds) for b in budgets)
        basis = f"**estimate** ({step.estimate}); {step.basis}" if step.estimate else step.basis
        rows.append(f"| {step.name}{mark} | {values} | {basis} |")
    for warm, label in (
        (False, "without headroom (a new node)"),
        (True, "with a warm placeholder"),
    ):
        values = " | ".join(f"**{_fmt(round(b.total(warm)))}**" for b in budgets)
        on_path = [
            s for s in budgets[0].steps if s.estimate and not (s.cold_only if warm else s.warm_only)
        ]
        share = round(100 * sum(s.seconds for s in on_path) / budgets[0].total(warm))
        note = f"estimates: {len(on_path)} of its steps, {share}% of the {budgets[0].stack} total"
        rows.append(f"| **total, {label}** | {values} | {note} |")
    headrooms = " | ".join(str(b.headroom) for b in budgets)
    rows.append(
        f"| gpuHeadroom of the stack | {headrooms} | rendered: placeholder replicas (with "
        "servingHours, the converge Job's) |"
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from rehearsal.mockengine import run_stack, stacks

    parser = argparse.ArgumentParser(prog="python -m rehearsal.budget", description=__doc__)
    parser.add_argument("stacks", nargs="*", help="default: every Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    budgets = [budget(s, run_stack(s).cluster_objects()) for s in args.stacks or stacks()]
    sys.stdout.write(table(budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
