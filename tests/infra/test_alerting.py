"""Alert delivery from stack config: `alertReceivers` validated at preview, credentials only in a
Secret, routing and inhibition as the rules need, and an explicit "nowhere" when nothing is set."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import yaml

from infra import alerting
from infra.alerts import alert_rule_groups
from infra.config import AlertReceiver, ConfigError
from rehearsal.mockengine import Inventory, Secret, load_stack_config, run_stack, walk

PD_KEY = "0123456789abcdef0123456789abcdef"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/abcdefghijklmnop"
TOKEN = "bearer-token-0123456789"
RECEIVERS: list[dict[str, Any]] = [
    {"name": "oncall", "type": "pagerduty", "alerts": ["page"], "routingKey": Secret(PD_KEY)},
    {
        "name": "chat",
        "type": "slack",
        "alerts": ["ticket"],
        "webhookUrl": Secret(SLACK_URL),
        "channel": "#gpu-inference",
    },
    {
        "name": "incidents",
        "type": "webhook",
        "url": "https://hooks.example.com/alertmanager",
        "bearerToken": Secret(TOKEN),
    },
]
SECRETS = (PD_KEY, SLACK_URL, TOKEN)


def receivers_error(value: Any) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        load_stack_config("dev", {"alertReceivers": value})
    return error.value


# --- Config ---------------------------------------------------------------------------------------


def test_receivers_parse_with_their_classes() -> None:
    cfg = load_stack_config("dev", {"alertReceivers": RECEIVERS}).monitoring
    by_name = {r.name: r for r in cfg.alert_receivers}
    assert by_name["oncall"] == AlertReceiver("oncall", "pagerduty", ("page",), secret=PD_KEY)
    assert by_name["chat"].channel == "#gpu-inference"
    assert by_name["incidents"].alerts == ("page", "ticket"), "both classes by default"
    assert PD_KEY not in repr(cfg), "a credential never appears in a repr or log line"


def test_no_receivers_is_the_explicit_default() -> None:
    assert load_stack_config("dev").monitoring.alert_receivers == ()


@pytest.mark.parametrize(
    ("value", "key", "allowed"),
    [
        ({"name": "x"}, "alertReceivers", "a list of receiver objects"),
        ([{"name": "Bad_Name", "type": "webhook"}], "alertReceivers[0].name", "DNS label"),
        ([{"name": "x", "type": "email"}], "alertReceivers[0].type", "webhook, slack, pagerduty"),
        (
            [{"name": "nowhere", "type": "webhook", "url": "https://h/x"}],
            "alertReceivers[0].name",
            "other than 'nowhere'",
        ),
        ([{"name": "x", "type": "pagerduty"}], "alertReceivers[0].routingKey", "required"),
        ([{"name": "x", "type": "webhook"}], "alertReceivers[0].url", "required"),
        (
            [{"name": "x", "type": "webhook", "url": "ftp://h/x"}],
            "alertReceivers[0].url",
            "http(s) URL",
        ),
        (
            [{"name": "x", "type": "webhook", "url": "https://u:p@h/x"}],
            "alertReceivers[0].url",
            "without credentials",
        ),
        (
            [{"name": "x", "type": "webhook", "url": "https://h/x", "alerts": ["pager"]}],
            "alertReceivers[0].alerts",
            "page (critical alerts) and/or ticket",
        ),
        (
            [{"name": "x", "type": "webhook", "url": "https://h/x", "channel": "#c"}],
            "alertReceivers[0].channel",
            "only the webhook fields",
        ),
        (
            [{"name": "x", "type": "slack", "webhookUrl": Secret(SLACK_URL), "channel": "gpu"}],
            "alertReceivers[0].channel",
            "Slack channel",
        ),
        (
            [
                {"name": "x", "type": "webhook", "url": "https://h/a"},
                {"name": "x", "type": "webhook", "url": "https://h/b"},
            ],
            "alertReceivers",
            "unique receiver names",
        ),
    ],
)
def test_bad_receivers_name_the_key_and_what_is_allowed(value: Any, key: str, allowed: str) -> None:
    error = receivers_error(value)
    assert error.stack_file == "Pulumi.dev.yaml"
    assert error.key == f"gpu-inference:{key}"
    assert allowed in error.allowed


def test_a_plain_credential_is_refused_and_never_shown() -> None:
    error = receivers_error([{"name": "oncall", "type": "pagerduty", "routingKey": PD_KEY}])
    assert error.key == "gpu-inference:alertReceivers[0].routingKey"
    assert "pulumi config set --secret --path 'alertReceivers[0].routingKey'" in error.allowed
    assert PD_KEY not in str(error)


def test_a_malformed_secret_is_refused_without_showing_it() -> None:
    bad = "not a url"
    error = receivers_error([{"name": "c", "type": "slack", "webhookUrl": Secret(bad)}])
    assert error.key == "gpu-inference:alertReceivers[0].webhookUrl"
    assert bad not in str(error)


def test_a_config_error_registers_nothing() -> None:
    with pytest.raises(ConfigError) as error:
        run_stack("dev", {"alertReceivers": [{"name": "x", "type": "pagerduty"}]})
    assert error.value.registered_resources == ()  # type: ignore[attr-defined]


# --- Routing --------------------------------------------------------------------------------------


def test_every_rule_severity_has_a_class() -> None:
    severities = {
        rule["labels"]["severity"]
        for group in alert_rule_groups()["groups"]
        for rule in group["rules"]
    }
    assert severities == {alerting.PAGE_SEVERITY, "warning"}, (
        "routing knows critical (page) and everything else (ticket); a new severity needs a thought"
    )


def test_inhibition_names_real_alerts_and_labels() -> None:
    rules = {
        rule["alert"]: rule for group in alert_rule_groups()["groups"] for rule in group["rules"]
    }
    for inhibit in alerting.inhibit_rules():
        names = set()
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            value = matcher.split("=", 1)[1].strip('~"')
            names |= set(value.strip('"').split("|"))
        assert names <= set(rules), f"inhibition names an alert that does not exist: {names}"
        for name in names:
            if inhibit["equal"] == ["namespace"]:
                assert 'namespace="' in rules[name]["expr"], f"{name} has no namespace label"
        sources = [m.split('"')[1] for m in inhibit["source_matchers"]]
        assert all(rules[s]["labels"]["severity"] == "critical" for s in sources), (
            "only a page holds other alerts back"
        )


def test_no_credential_in_the_configuration() -> None:
    receivers = load_stack_config("dev", {"alertReceivers": RECEIVERS}).monitoring.alert_receivers
    text = json.dumps(alerting.alertmanager_config(receivers))
    assert not [s for s in SECRETS if s in text]
    assert set(alerting.secret_files(receivers).values()) == set(SECRETS)


# --- The program ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_receivers() -> Inventory:
    return run_stack("dev", {"alertReceivers": RECEIVERS})


def test_credentials_only_in_a_secret(with_receivers: Inventory) -> None:
    secret = with_receivers.one(
        "kubernetes:core/v1:Secret", "gpu-inference-dev-monitoring-alert-receivers"
    )
    data = secret.inputs["stringData"]
    assert isinstance(data, Secret), "encrypted in state, masked in the preview"
    assert set(data.value.values()) == set(SECRETS)
    assert secret.inputs["metadata"]["name"] == alerting.SECRET_NAME
    for r in with_receivers.resources:
        if r is secret:
            continue
        plain = [v for v in walk(r.inputs) if isinstance(v, str) and any(s in v for s in SECRETS)]
        assert not plain, f"{r.type} {r.name} holds a credential"
    leaked = [
        v
        for render in with_receivers.rendered
        for v in walk(list(render.rendered.objects))
        if isinstance(v, str) and any(s in v for s in SECRETS)
    ]
    assert not leaked, "a chart object holds a credential"


def test_the_alertmanager_pod_mounts_the_credentials(with_receivers: Inventory) -> None:
    [statefulset] = [
        o
        for o in with_receivers.cluster_objects()
        if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "prometheus-alertmanager"
    ]
    pod = statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for c in pod["containers"] for m in c.get("volumeMounts", [])}
    mount = mounts[alerting.SECRETS_DIR]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, (
        "a subPath mount is never refreshed: rotation would need a restart"
    )
    assert volumes[mount["name"]]["secret"]["secretName"] == alerting.SECRET_NAME
    [config_map] = [
        o
        for o in with_receivers.cluster_objects()
        if o["kind"] == "ConfigMap" and "alertmanager.yml" in o.get("data", {})
    ]
    config = yaml.safe_load(config_map["data"]["alertmanager.yml"])
    files = [
        v for v in walk(config) if isinstance(v, str) and v.startswith(alerting.SECRETS_DIR + "/")
    ]
    assert sorted(f.rsplit("/", 1)[1] for f in files) == sorted(
        alerting.secret_files(
            load_stack_config("dev", {"alertReceivers": RECEIVERS}).monitoring.alert_receivers
        )
    ), "every credential file the configuration names is a key of the mounted Secret"
    assert [r["name"] for r in config["receivers"]] == ["nowhere", "oncall", "chat", "incidents"]


def test_delivery_output(with_receivers: Inventory, dev: Inventory) -> None:
    assert with_receivers.outputs["alertDelivery"] == {
        "page": ["oncall (pagerduty)", "incidents (webhook)"],
        "ticket": ["chat (slack)", "incidents (webhook)"],
    }
    assert dev.outputs["alertDelivery"] == {"page": [], "ticket": []}


def test_a_stack_without_receivers_says_alerts_go_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    """The engine's warning channel (the mock engine logs it as a Python warning record)."""
    with caplog.at_level(logging.WARNING):
        run_stack("dev")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("alerts go nowhere" in w and "Pulumi.dev.yaml" in w for w in warnings), warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_stack("prod")
    assert not [r for r in caplog.records if "alerts go nowhere" in r.getMessage()]


def test_prod_delivers_every_rule(prod: Inventory) -> None:
    [config_map] = [
        o
        for o in prod.cluster_objects()
        if o["kind"] == "ConfigMap" and "alertmanager.yml" in o.get("data", {})
    ]
    config = yaml.safe_load(config_map["data"]["alertmanager.yml"])
    assert [r["receiver"] for r in config["route"]["routes"]] == ["incidents"]
    assert "matchers" not in config["route"]["routes"][0], "pages and tickets alike"


def test_encrypted_stack_file_values_render_offline() -> None:
    """What a stack file holds after `pulumi config set --secret --path ...`: `secure:` leaves
    inside the object. Offline they become placeholders, and the key stays secret, so the synth
    and the gate still render and check such a stack."""
    inventory = run_stack(
        "prod",
        {
            "alertReceivers": [
                {"name": "oncall", "type": "pagerduty", "routingKey": {"secure": "v1:AAAA"}},
                {"name": "chat", "type": "slack", "webhookUrl": {"secure": "v1:BBBB"}},
            ]
        },
    )
    secret = inventory.one(
        "kubernetes:core/v1:Secret", "gpu-inference-prod-monitoring-alert-receivers"
    )
    assert isinstance(secret.inputs["stringData"], Secret)
    assert sorted(secret.inputs["stringData"].value) == ["chat-slack", "oncall-pagerduty"]
