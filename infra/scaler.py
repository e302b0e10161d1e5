"""Scales Deployments through their scale subresource: the servingHours jobs' program.

    python scaler.py wake inference/embeddings>=2 gpu-headroom/embeddings-headroom=1
    python scaler.py sleep inference/embeddings gpu-headroom/embeddings-headroom
    python scaler.py converge --timezone Europe/Berlin --awake 480-1080,1920-2520 \
        inference/embeddings>=2 gpu-headroom/embeddings-headroom=1

Runs in the schedule's pods on the python:3.11-slim-trixie image (infra/versions.py PYTHON_IMAGE),
mounted from a ConfigMap: the standard library only, nothing of this repository imported. It reads
and patches `deployments/<name>/scale` only (GET and a JSON merge patch of `spec.replicas`:
Kubernetes API reference, "Scale" of apps/v1 Deployment), which is all its Role allows
(infra/schedule.py).

- wake: `ns/name>=N` (a Deployment its HPA scales) goes up to N when it has fewer, and is otherwise
  left alone: one already running (woken by hand, or scaled by its HPA) keeps its count, since the
  HPA owns it from there. `ns/name=N` (the warm-GPU placeholders, which no HPA scales) is set to N
  exactly, so a changed gpuHeadroom holds from the next wake.
- sleep: every Deployment goes to 0. An HPA whose target is at 0 stops scaling it ("scaling is
  disabled since the replica count of the target is zero", kubernetes/kubernetes
  pkg/controller/podautoscaler/horizontal.go; Kubernetes docs, "Horizontal Pod Autoscaling",
  "Implicit maintenance-mode deactivation") until the next wake.
- converge: wake when the clock of `--timezone` is inside one of the `--awake` spans (minutes of
  the week from Monday 00:00, the program's merged servingHours windows), else sleep: the state of
  the current window, for a Deployment Pulumi has just created (infra/schedule.py says when it
  runs). The zone comes from the image's tz database (the python image installs Debian's tzdata:
  docker-library/python 3.11/slim-trixie/Dockerfile, "runtime dependencies"), the one the
  CronJobs' `timeZone` follows in the controller.

Every target is tried; the exit status is 1 if any failed, so the Job retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ACTIONS = ("wake", "sleep", "converge")
ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MERGE_PATCH = "application/merge-patch+json"
MINUTES_PER_WEEK = 7 * 24 * 60


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    replicas: int
    """wake: the count it goes to (sleep: 0)."""
    exact: bool = False
    """wake: set `replicas` whatever the count (`=N`) rather than raise it to them (`>=N`)."""

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Awake:
    """When the servingHours windows are open: [open, close) minutes of the week in `timezone`
    (a span may run past the week's end and wrap)."""

    timezone: str
    spans: tuple[tuple[int, int], ...]

    def at(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        minute = (local.weekday() * 24 + local.hour) * 60 + local.minute
        return any(o <= m < c for o, c in self.spans for m in (minute, minute + MINUTES_PER_WEEK))


class ApiError(Exception):
    pass


class KubeApi:
    """The two calls the scaler makes, with the pod's service account token."""

    def __init__(self, base_url: str, token_file: str, ca_file: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str] | None = None) -> KubeApi:
        """The API server as every pod sees it (the `kubernetes` Service's env variables)."""
        env = os.environ if environ is None else environ
        host, port = env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", f"{ACCOUNT_DIR}/token", f"{ACCOUNT_DIR}/ca.crt")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Read per call: a projected token is rotated in place.
        with open(self.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = MERGE_PATCH
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=data, headers=headers, method=method
        )
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise ApiError(f"{method} {path}: HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            raise ApiError(f"{method} {path}: {error}") from None

    @staticmethod
    def scale_path(namespace: str, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"

    def replicas(self, namespace: str, name: str) -> int:
        scale = self._call("GET", self.scale_path(namespace, name))
        return int(scale.get("spec", {}).get("replicas", 0))

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self._call("PATCH", self.scale_path(namespace, name), {"spec": {"replicas": replicas}})


def parse_targets(action: str, specs: list[str]) -> list[Target]:
    """`ns/name>=N` or `ns/name=N` for wake and converge, `ns/name` for sleep."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
    if not specs:
        raise ValueError("no Deployment to scale")
    counted = action != "sleep"
    shape = "namespace/name>=replicas or namespace/name=replicas" if counted else "namespace/name"
    targets = []
    for spec in specs:
        where, equals, count = spec.partition("=")
        at_least = where.endswith(">")
        namespace, _, name = where.removesuffix(">").partition("/")
        if not namespace or not name or "/" in name or counted != bool(equals):
            raise ValueError(f"{spec!r}: expected {shape} for {action}")
        if not counted:
            targets.append(Target(namespace, name, 0, exact=True))
            continue
        if not count.isdigit() or int(count) == 0:
            raise ValueError(f"{spec!r}: a {action} needs a count of at least one replica")
        targets.append(Target(namespace, name, int(count), exact=not at_least))
    return targets


def parse_spans(text: str) -> tuple[tuple[int, int], ...]:
    """`480-1080,1920-2520`: the open windows as minutes of the week."""
    spans = []
    for item in text.split(","):
        opened, _, closed = item.partition("-")
        if not (opened.isdigit() and closed.isdigit()):
            raise ValueError(f"--awake {item!r}: expected OPEN-CLOSE minutes of the week")
        span = (int(opened), int(closed))
        if not 0 <= span[0] < MINUTES_PER_WEEK or not span[0] < span[1] <= 2 * MINUTES_PER_WEEK:
            raise ValueError(f"--awake {item!r}: OPEN within the week, CLOSE after it")
        spans.append(span)
    return tuple(spans)


def parse_awake(args: list[str]) -> tuple[Awake, list[str]]:
    """converge's `--timezone ZONE --awake SPANS`, then its targets."""
    if len(args) < 4 or args[0] != "--timezone" or args[2] != "--awake":
        raise ValueError("converge: expected --timezone ZONE --awake SPANS, then the targets")
    try:
        ZoneInfo(args[1])
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--timezone {args[1]!r}: not a zone of this tz database") from None
    return Awake(args[1], parse_spans(args[3])), args[4:]


def wanted(action: str, target: Target, current: int) -> int:
    if action == "sleep":
        return 0
    if target.exact:
        return target.replicas
    return max(current, target.replicas)


def run(api: KubeApi, action: str, targets: list[Target]) -> int:
    """wake or sleep every target."""
    failed = 0
    for target in targets:
        try:
            current = api.replicas(target.namespace, target.name)
            goal = wanted(action, target, current)
            if goal == current:
                print(f"{action} {target.where}: at {current} replicas, left alone", flush=True)
                continue
            api.set_replicas(target.namespace, target.name, goal)
            print(f"{action} {target.where}: {current} -> {goal} replicas", flush=True)
        except ApiError as error:
            failed += 1
            print(f"{action} {target.where}: failed: {error}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def converge(api: KubeApi, awake: Awake, targets: list[Target], now: datetime) -> int:
    """The state of the window `now` is in: a wake inside the windows, a sleep outside."""
    inside = awake.at(now)
    local = now.astimezone(ZoneInfo(awake.timezone)).strftime("%a %H:%M %Z")
    print(f"converge: {local} is {'inside' if inside else 'outside'} servingHours", flush=True)
    return run(api, "wake" if inside else "sleep", targets)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    action, rest = argv[0], argv[1:]
    try:
        awake = None
        if action == "converge":
            awake, rest = parse_awake(rest)
        targets = parse_targets(action, rest)
    except ValueError as error:
        print(f"scaler: {error}", file=sys.stderr)
        return 2
    api = KubeApi.in_cluster()
    if awake is None:
        return run(api, action, targets)
    return converge(api, awake, targets, datetime.now(UTC))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
