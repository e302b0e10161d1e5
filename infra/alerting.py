"""Alert delivery: the Alertmanager configuration built from the stack's `alertReceivers`.

Routing follows the severities of infra/alerts.py: `critical` pages (someone acts now), anything
else is a ticket (someone looks within the day). Each configured receiver gets a route of its own
(`continue: true`), so one alert reaches every receiver that asked for its class and a notification
names the receiver it was sent to. With no receiver the root route ends in a receiver without
integrations: Alertmanager runs and shows alerts in its UI, but nobody is notified, and the
program says so at preview (`delivery_warning`).

Credentials never enter the configuration: the Slack webhook URL, the PagerDuty routing key and a
webhook's bearer token are files of a Kubernetes Secret mounted into the Alertmanager pod, and the
configuration names the files (`api_url_file`, `routing_key_file`, `credentials_file`).
Alertmanager reads them at each notification (notify/slack/slack.go in prometheus/alertmanager:
`os.ReadFile(n.conf.APIURLFile)` inside Notify), so a rotated Secret takes effect without a
restart. A webhook's URL itself stays in the configuration: `url_file` is not understood by the
Alertmanager 0.25 whose `amtool check-config` gates this file (Debian's; the chart runs 0.30), so a
webhook carries its credential in the bearer token.

Standard library + infra.config only: imported by the Pulumi program, the checks and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from infra.config import NO_RECEIVER, AlertReceiver

PAGE_SEVERITY: Final = "critical"
"""The `severity` label value that pages; every other severity is a ticket."""
NOWHERE: Final = NO_RECEIVER
"""The receiver without integrations that alerts end in when no route matches."""
SECRET_NAME: Final = "alertmanager-receivers"
"""The Kubernetes Secret holding the receivers' credentials, one file per receiver."""
SECRETS_DIR: Final = "/etc/alertmanager-secrets"
"""Where that Secret is mounted. Not under /etc/alertmanager: that is the chart's ConfigMap volume,
and a mount point inside a read-only ConfigMap volume cannot be created."""
GROUP_BY: Final = ("alertname", "namespace")
"""One notification per alert per namespace: XID errors on three GPUs are one page, not three."""


PAGERDUTY_SUMMARY: Final = (
    "{{ with .CommonAnnotations.summary }}{{ . }}{{ else }}{{ .CommonLabels.alertname }}: "
    "{{ .Alerts.Firing | len }} firing{{ end }}"
)


@dataclass(frozen=True)
class Timing:
    """Alertmanager's notification timers for one class of alerts (Prometheus durations)."""

    group_wait: str
    """How long a new group waits for more alerts before the first notification."""
    group_interval: str
    """How long before a changed group (new alert, or resolved) is notified again."""
    repeat_interval: str
    """How often a still-firing group is re-sent."""

    def as_route(self) -> dict[str, str]:
        return {
            "group_wait": self.group_wait,
            "group_interval": self.group_interval,
            "repeat_interval": self.repeat_interval,
        }


PAGE_TIMING: Final = Timing(group_wait="30s", group_interval="5m", repeat_interval="4h")
"""Pages go out quickly and are repeated while unresolved (an on-call may have missed one)."""
TICKET_TIMING: Final = Timing(group_wait="2m", group_interval="10m", repeat_interval="24h")
"""Tickets batch for longer and repeat once a day."""


def inhibit_rules() -> list[dict[str, Any]]:
    """Alerts that say nothing new while a more fundamental one fires (same namespace or GPU).

    - No ready pod at all (InferenceUnavailable): pods not ready, latency, 429s and the HPA at max
      follow from it (no pod serves, the HPA cannot reach its target).
    - Pods pending with no free GPU (InferenceGPUCapacityUnavailable): that is why pods are not
      ready, and why the HPA sits at its maximum wanted size.
    - An XID error on a GPU: its memory warning is noise until the node is replaced.
    - Inference pods pending with no free GPU: the warm-GPU placeholders, in their own namespace,
      are pending for the same reason (and are preempted first), so their warning says nothing new.
    """
    return [
        {
            "source_matchers": ['alertname="InferenceUnavailable"'],
            "target_matchers": [
                "alertname=~"
                '"InferencePodsNotReady|InferenceHighLatencyP95|InferenceHighThrottleRate|'
                'InferenceHPAAtMaxReplicas"'
            ],
            "equal": ["namespace"],
        },
        {
            "source_matchers": ['alertname="InferenceGPUCapacityUnavailable"'],
            "target_matchers": ['alertname=~"InferencePodsNotReady|InferenceHPAAtMaxReplicas"'],
            "equal": ["namespace"],
        },
        {
            "source_matchers": ['alertname="InferenceGPUCapacityUnavailable"'],
            "target_matchers": ['alertname="GPUHeadroomPending"'],
            # Across namespaces: the placeholders have their own.
            "equal": [],
        },
        {
            "source_matchers": ['alertname="GPUXidError"'],
            "target_matchers": ['alertname="GPUMemoryNearlyFull"'],
            "equal": ["Hostname", "gpu"],
        },
    ]


def secret_file(receiver: AlertReceiver) -> str | None:
    """The file name of a receiver's credential in the Secret (None: it has none)."""
    return f"{receiver.name}-{receiver.type}" if receiver.secret is not None else None


def secret_files(receivers: Sequence[AlertReceiver]) -> dict[str, str]:
    """The Secret's content: file name -> credential, for every receiver that has one."""
    return {
        name: receiver.secret
        for receiver in receivers
        if receiver.secret is not None and (name := secret_file(receiver)) is not None
    }


def _integration(receiver: AlertReceiver, secrets_dir: str) -> dict[str, Any]:
    credential = f"{secrets_dir}/{secret_file(receiver)}"
    if receiver.type == "webhook":
        webhook: dict[str, Any] = {"url": receiver.url, "send_resolved": True}
        if receiver.secret is not None:
            webhook["http_config"] = {"authorization": {"credentials_file": credential}}
        return {"webhook_configs": [webhook]}
    if receiver.type == "slack":
        slack: dict[str, Any] = {
            "api_url_file": credential,
            "send_resolved": True,
            "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} "
            "({{ .CommonLabels.severity }})",
            "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n"
            "{{ .Annotations.description }}\n{{ end }}",
        }
        if receiver.channel is not None:
            slack["channel"] = receiver.channel
        return {"slack_configs": [slack]}
    if receiver.type == "pagerduty":
        return {
            "pagerduty_configs": [
                {
                    "routing_key_file": credential,
                    "send_resolved": True,
                    "severity": "{{ .CommonLabels.severity }}",
                    # PagerDuty refuses an event without a summary, and a group of several alerts
                    # (XID errors on two GPUs) has no common one: then name the alert and count.
                    "description": PAGERDUTY_SUMMARY,
                }
            ]
        }
    raise ValueError(f"receiver {receiver.name}: unknown type {receiver.type!r}")


def _route(receiver: AlertReceiver, page: Timing, ticket: Timing) -> dict[str, Any]:
    route: dict[str, Any] = {"receiver": receiver.name, "continue": True}
    if receiver.alerts == ("page",):
        route["matchers"] = [f'severity="{PAGE_SEVERITY}"']
        route.update(page.as_route())
    elif receiver.alerts == ("ticket",):
        route["matchers"] = [f'severity!="{PAGE_SEVERITY}"']
        route.update(ticket.as_route())
    else:
        # Both classes: the page timers, so a critical alert is never held back by ticket batching.
        route.update(page.as_route())
    return route


def alertmanager_config(
    receivers: Sequence[AlertReceiver],
    *,
    secrets_dir: str = SECRETS_DIR,
    page: Timing = PAGE_TIMING,
    ticket: Timing = TICKET_TIMING,
) -> dict[str, Any]:
    """The complete `alertmanager.yml` (no credentials in it: see the module docstring)."""
    return {
        "global": {"resolve_timeout": "5m"},
        "templates": [],
        "route": {
            "receiver": NOWHERE,
            "group_by": list(GROUP_BY),
            **ticket.as_route(),
            "routes": [_route(r, page, ticket) for r in receivers],
        },
        "inhibit_rules": inhibit_rules(),
        "receivers": [
            {"name": NOWHERE},
            *({"name": r.name, **_integration(r, secrets_dir)} for r in receivers),
        ],
    }


def delivery(receivers: Sequence[AlertReceiver]) -> dict[str, list[str]]:
    """Who gets what, for the stack output: {"page": ["oncall (pagerduty)"], "ticket": [...]}."""
    return {
        alert_class: [f"{r.name} ({r.type})" for r in receivers if alert_class in r.alerts]
        for alert_class in ("page", "ticket")
    }


def delivery_warning(receivers: Sequence[AlertReceiver], stack_file: str) -> str | None:
    """What the preview must say when an alert class reaches nobody (None: both are delivered)."""
    missing = [c for c, names in delivery(receivers).items() if not names]
    if not missing:
        return None
    what = " and ".join(
        {"page": "critical alerts (pages)", "ticket": "warnings (tickets)"}[c] for c in missing
    )
    return (
        f"alerts go nowhere: no alertReceivers entry receives {what}; Alertmanager shows them in "
        f'its UI but notifies nobody. Add a receiver in {stack_file} (README "Alerts").'
    )
