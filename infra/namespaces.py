"""Namespaces with Pod Security Admission labels.

https://kubernetes.io/docs/concepts/security/pod-security-admission/
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

Level = Literal["privileged", "baseline", "restricted"]


def pod_security_namespace(
    resource_name: str,
    name: str,
    enforce: Level,
    opts: pulumi.ResourceOptions,
    audit: Level | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> k8s.core.v1.Namespace:
    """A namespace whose pods the API server admits only at `enforce`; `audit` (and `warn`) at a
    stricter level show which objects would fail it, so the gap stays visible without blocking
    upstream charts."""
    labels = {**(extra_labels or {}), "pod-security.kubernetes.io/enforce": enforce}
    report = audit or enforce
    labels["pod-security.kubernetes.io/audit"] = report
    labels["pod-security.kubernetes.io/warn"] = report
    return k8s.core.v1.Namespace(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=labels),
        opts=opts,
    )
