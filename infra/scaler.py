"""Scales Deployments through their scale subresource: the servingHours CronJobs' program.

    python scaler.py wake inference/embeddings=2 gpu-headroom/embeddings-headroom=1
    python scaler.py sleep inference/embeddings gpu-headroom/embeddings-headroom

Runs in the CronJob pods on the python:3.12-slim image (infra/versions.py PYTHON_IMAGE), mounted
from a ConfigMap: the standard library only, nothing of this repository imported. It reads and
patches `deployments/<name>/scale` only (GET and a JSON merge patch of `spec.replicas`: Kubernetes
API reference, "Scale" of apps/v1 Deployment), which is all its Role allows (infra/schedule.py).

- wake: a Deployment at 0 replicas goes to its minimum; one already running (woken by hand, or
  scaled by its HPA) is left alone, since its HPA owns the count from there.
- sleep: every Deployment goes to 0. An HPA whose target is at 0 stops scaling it ("scaling is
  disabled since the replica count of the target is zero", kubernetes/kubernetes
  pkg/controller/podautoscaler/horizontal.go; Kubernetes docs, "Horizontal Pod Autoscaling",
  "Implicit maintenance-mode deactivation") until the next wake.

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
from typing import Any

ACTIONS = ("wake", "sleep")
ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    replicas: int
    """wake: the count a Deployment at zero goes to; sleep: 0."""


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
    """`ns/name=N` for wake, `ns/name` for sleep."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
    if not specs:
        raise ValueError("no Deployment to scale")
    targets = []
    for spec in specs:
        where, _, count = spec.partition("=")
        namespace, _, name = where.partition("/")
        if not namespace or not name or (action == "wake") != bool(count):
            shape = "namespace/name=replicas" if action == "wake" else "namespace/name"
            raise ValueError(f"{spec!r}: expected {shape} for {action}")
        replicas = int(count) if count else 0
        if replicas < 0 or (action == "wake" and replicas == 0):
            raise ValueError(f"{spec!r}: a wake needs at least one replica")
        targets.append(Target(namespace, name, replicas))
    return targets


def run(api: KubeApi, action: str, targets: list[Target]) -> int:
    failed = 0
    for target in targets:
        where = f"{target.namespace}/{target.name}"
        try:
            current = api.replicas(target.namespace, target.name)
            if action == "wake" and current > 0:
                print(f"{action} {where}: already at {current} replicas, left alone", flush=True)
                continue
            if action == "sleep" and current == 0:
                print(f"{action} {where}: already at 0 replicas", flush=True)
                continue
            api.set_replicas(target.namespace, target.name, target.replicas)
            print(f"{action} {where}: {current} -> {target.replicas} replicas", flush=True)
        except ApiError as error:
            failed += 1
            print(f"{action} {where}: failed: {error}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        targets = parse_targets(argv[0], argv[1:])
    except ValueError as error:
        print(f"scaler: {error}", file=sys.stderr)
        return 2
    return run(KubeApi.in_cluster(), argv[0], targets)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
