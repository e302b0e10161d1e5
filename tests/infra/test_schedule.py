"""servingHours: the CronJobs, their least-privilege access, and the scaler they run.

No Kubernetes API server runs here, so the scaler is run against a loopback stand-in for the one
API it calls (the `deployments/<name>/scale` subresource) that authorises every request with the
*rendered* Role and RoleBinding objects, the way RBAC does: a verb, resource or name the rendered
Role does not grant is refused with 403, as the API server would."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra import headroom, inference, scaler, schedule, versions
from infra.config import ConfigError, ServingHours, ServingWindow
from infra.config import awake_spans as config_awake_spans
from rehearsal.budget import find
from rehearsal.mockengine import Inventory, Resource, load_stack_config, run_stack

Objects = Sequence[Mapping[str, Any]]
SCALER = f"system:serviceaccount:inference:{schedule.APP_NAME}"
ROOT = Path(__file__).resolve().parents[2]
HOURS = {
    "timezone": "Europe/Berlin",
    "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00"}],
}


def cron_jobs(objects: Objects) -> dict[str, Mapping[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "CronJob"}


def job_pod(cron_job: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


# --- What is rendered ---------------------------------------------------------------------------


def test_dev_sleeps_outside_working_hours_and_prod_never(dev: Inventory, prod: Inventory) -> None:
    jobs = cron_jobs(dev.cluster_objects())
    assert sorted(jobs) == ["embeddings-sleep-1900", "embeddings-wake-0700"]
    for name, minute in (("embeddings-wake-0700", "0 7"), ("embeddings-sleep-1900", "0 19")):
        assert jobs[name]["spec"]["schedule"] == f"{minute} * * 1,2,3,4,5"
        assert jobs[name]["spec"]["timeZone"] == "America/Los_Angeles"
        assert jobs[name]["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron_jobs(prod.cluster_objects()) == {}
    assert dev.outputs["servingHours"] == {
        "timezone": "America/Los_Angeles",
        "wake": ["0 7 * * 1,2,3,4,5"],
        "sleep": ["0 19 * * 1,2,3,4,5"],
    }
    assert prod.outputs["servingHours"] is None


def test_wake_restores_the_hpa_minimum_and_sleep_zero(dev: Inventory) -> None:
    objects = dev.cluster_objects()
    jobs = cron_jobs(objects)
    hpa_min = find(objects, "HorizontalPodAutoscaler", inference.APP_NAME)["spec"]["minReplicas"]
    (wake,) = job_pod(jobs["embeddings-wake-0700"])["containers"]
    (sleep,) = job_pod(jobs["embeddings-sleep-1900"])["containers"]
    # At least the minimum: a Deployment its HPA (or a person) scaled up keeps its count.
    assert wake["command"][2:] == ["wake", f"inference/{inference.APP_NAME}>={hpa_min}"]
    assert sleep["command"][2:] == ["sleep", f"inference/{inference.APP_NAME}"]


def deployment_resource(inventory: Inventory, name: str) -> Resource:
    (found,) = [
        r
        for r in inventory.k8s_resources()
        if r.type == "kubernetes:apps/v1:Deployment" and r.inputs["metadata"]["name"] == name
    ]
    return found


def test_pulumi_never_sets_the_replica_count(prod: Inventory) -> None:
    """Without a schedule the HPA owns `replicas`; a value in the applied config would reset it."""
    deployment = deployment_resource(prod, inference.APP_NAME)
    assert "replicas" not in deployment.inputs["spec"]
    assert "spec.replicas" not in deployment.ignore_changes


def test_with_a_schedule_nothing_starts_a_gpu_node_at_creation(
    scheduled_prod_stack: Inventory,
) -> None:
    """Created with no `replicas`, a Deployment gets the API's default of one, and the
    placeholders got gpuHeadroom: an `up` after the closing time kept a GPU node until the next
    edge. Now both start at zero, Pulumi ignores the count after creation, and the converge Job
    sets the current window's."""
    for name in (inference.APP_NAME, headroom.APP_NAME):
        deployment = deployment_resource(scheduled_prod_stack, name)
        assert deployment.inputs["spec"]["replicas"] == 0, name
        assert "spec.replicas" in deployment.ignore_changes, name


def test_scaler_pods_are_pinned_locked_down_and_off_the_gpu_nodes(dev: Inventory) -> None:
    objects = dev.cluster_objects()
    for job in cron_jobs(objects).values():
        pod = job_pod(job)
        (container,) = pod["containers"]
        assert container["image"] == versions.PYTHON_IMAGE
        assert pod["nodeSelector"] == {"gpu-inference.io/node-role": "system"}
        assert "tolerations" not in pod
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == schedule.APP_NAME
        (token,) = [
            source["serviceAccountToken"]
            for volume in pod["volumes"]
            if "projected" in volume
            for source in volume["projected"]["sources"]
            if "serviceAccountToken" in source
        ]
        assert token["expirationSeconds"] <= 3600
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    script = find(objects, "ConfigMap", schedule.APP_NAME)["data"]["scaler.py"]
    assert script == (ROOT / "infra" / "scaler.py").read_text()


def test_cron_image_is_the_dockerfiles_base_by_the_same_digest() -> None:
    (argument,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert f"docker.io/library/{argument}" == versions.PYTHON_IMAGE


def test_role_grants_only_scaling_the_named_deployments(dev: Inventory) -> None:
    objects = dev.cluster_objects()
    role = find(objects, "Role", schedule.APP_NAME)
    assert role["metadata"]["namespace"] == "inference"
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [inference.APP_NAME],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find(objects, "RoleBinding", schedule.APP_NAME)
    assert binding["roleRef"]["name"] == schedule.APP_NAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": schedule.APP_NAME, "namespace": "inference"}
    ]


# --- Window edges -------------------------------------------------------------------------------


def events(*windows: ServingWindow) -> list[tuple[str, str]]:
    hours = ServingHours("UTC", windows)
    return [(e.action, e.cron) for e in schedule.scale_events(hours)]


def test_overnight_and_touching_windows_give_one_wake_and_one_sleep() -> None:
    # Sunday 22:00 to Monday 06:00, then Monday 06:00 to 09:00: one span, no sleep/wake at 06:00.
    assert events(ServingWindow((6,), 22 * 60, 6 * 60), ServingWindow((0,), 6 * 60, 9 * 60)) == [
        ("sleep", "0 9 * * 1"),
        ("wake", "0 22 * * 0"),
    ]
    # Overlapping windows merge; whole days end at midnight of the next day.
    assert events(ServingWindow((5, 6), 0, 24 * 60), ServingWindow((6,), 12 * 60, 20 * 60)) == [
        ("sleep", "0 0 * * 1"),
        ("wake", "0 0 * * 6"),
    ]


@pytest.mark.parametrize(
    ("hours", "key", "allowed"),
    [
        ({"timezone": "CET+1", "windows": HOURS["windows"]}, "servingHours.timezone", "IANA"),
        ({"timezone": "Local", "windows": HOURS["windows"]}, "servingHours.timezone", "IANA"),
        (
            {"timezone": "UTC", "windows": [{"days": ["mon"], "start": "8:00", "end": "18:00"}]},
            "servingHours.windows[0].start",
            "HH:MM",
        ),
        (
            {
                "timezone": "UTC",
                "windows": [{"days": ["weekdays"], "start": "08:00", "end": "18:00"}],
            },
            "servingHours.windows[0].days",
            "mon-fri",
        ),
        (
            {"timezone": "UTC", "windows": [{"days": ["mon"], "start": "08:00", "end": "08:00"}]},
            "servingHours.windows[0].end",
            "00:00 to 24:00",
        ),
        (
            {
                "timezone": "UTC",
                "windows": [{"days": ["mon-sun"], "start": "00:00", "end": "24:00"}],
            },
            "servingHours.windows",
            "unset servingHours",
        ),
        ({"timezone": "UTC"}, "servingHours", "timezone"),
    ],
)
def test_bad_serving_hours_fail_naming_key_and_allowed(
    hours: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_stack_config("dev", {"servingHours": hours})
    assert error.value.key == f"gpu-inference:{key}"
    assert allowed in error.value.allowed


# --- The scaler against RBAC as rendered ----------------------------------------------------------


class _ScaleApi(ThreadingHTTPServer):
    """The scale subresource of a few Deployments, behind the rendered RBAC objects."""

    def __init__(self, objects: Objects, replicas: dict[tuple[str, str], int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects = objects
        self.replicas = replicas
        self.tokens = {"scaler-token": SCALER}
        self.log: list[tuple[str, str]] = []

    def allowed(self, user: str, verb: str, namespace: str, name: str) -> bool:
        for binding in (o for o in self.objects if o["kind"] == "RoleBinding"):
            if binding["metadata"]["namespace"] != namespace:
                continue
            subjects = {
                f"system:serviceaccount:{s['namespace']}:{s['name']}"
                for s in binding["subjects"]
                if s["kind"] == "ServiceAccount"
            }
            if user not in subjects or binding["roleRef"]["kind"] != "Role":
                continue
            role = [
                o
                for o in self.objects
                if o["kind"] == "Role"
                and o["metadata"]["name"] == binding["roleRef"]["name"]
                and o["metadata"]["namespace"] == namespace
            ]
            for rule in (rule for r in role for rule in r["rules"]):
                if (
                    "apps" in rule["apiGroups"]
                    and "deployments/scale" in rule["resources"]
                    and verb in rule["verbs"]
                    and name in rule.get("resourceNames", [name])
                ):
                    return True
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _ScaleApi
    PATH = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)/scale$")

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, verb: str) -> None:
        match = self.PATH.match(self.path)
        user = self.server.tokens.get(self.headers.get("Authorization", "").removeprefix("Bearer "))
        if user is None:
            return self._reply(401, {"kind": "Status", "message": "Unauthorized"})
        if match is None or not self.server.allowed(user, verb, match[1], match[2]):
            return self._reply(
                403, {"kind": "Status", "message": f"{user} cannot {verb} {self.path}"}
            )
        key = (match[1], match[2])
        if key not in self.server.replicas:
            return self._reply(404, {"kind": "Status", "message": "not found"})
        if verb == "patch":
            if self.headers.get("Content-Type") != scaler.MERGE_PATCH:
                return self._reply(415, {"kind": "Status", "message": "unsupported patch type"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.server.replicas[key] = int(body["spec"]["replicas"])
        self.server.log.append((verb, f"{key[0]}/{key[1]}"))
        self._reply(
            200,
            {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "spec": {"replicas": self.server.replicas[key]},
            },
        )

    def do_GET(self) -> None:
        self._handle("get")

    def do_PATCH(self) -> None:
        self._handle("patch")


@pytest.fixture(scope="module")
def scheduled_prod_stack() -> Inventory:
    """prod with servingHours: the inference Deployment and the placeholders are both scaled."""
    return run_stack("prod", {"servingHours": HOURS})


@pytest.fixture
def scheduled_prod(scheduled_prod_stack: Inventory) -> Objects:
    return scheduled_prod_stack.cluster_objects()


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[_ScaleApi] = []
    token = tmp_path / "token"
    token.write_text("scaler-token\n")

    def start(
        objects: Objects, replicas: dict[tuple[str, str], int]
    ) -> tuple[_ScaleApi, scaler.KubeApi]:
        server = _ScaleApi(objects, replicas)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, scaler.KubeApi(
            f"http://127.0.0.1:{server.server_address[1]}", str(token), None
        )

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_job(objects: Objects, name: str, api: scaler.KubeApi) -> int:
    (container,) = job_pod(cron_jobs(objects)[name])["containers"]
    action, *specs = container["command"][2:]
    return scaler.run(api, action, scaler.parse_targets(action, specs))


def test_night_and_morning_with_the_rendered_jobs_and_roles(
    scheduled_prod: Objects, api_factory: Any
) -> None:
    replicas = {("inference", inference.APP_NAME): 5, (headroom.NAMESPACE, headroom.APP_NAME): 1}
    server, api = api_factory(scheduled_prod, replicas)
    assert run_job(scheduled_prod, "embeddings-sleep-1800", api) == 0
    assert replicas == {
        ("inference", inference.APP_NAME): 0,
        (headroom.NAMESPACE, headroom.APP_NAME): 0,
    }
    assert run_job(scheduled_prod, "embeddings-wake-0800", api) == 0
    # prod: hpaMinReplicas 2, gpuHeadroom 1.
    assert replicas == {
        ("inference", inference.APP_NAME): 2,
        (headroom.NAMESPACE, headroom.APP_NAME): 1,
    }
    assert ("patch", f"{headroom.NAMESPACE}/{headroom.APP_NAME}") in server.log


def test_a_wake_leaves_a_running_deployment_to_its_hpa(
    scheduled_prod: Objects, api_factory: Any
) -> None:
    replicas = {("inference", inference.APP_NAME): 7, (headroom.NAMESPACE, headroom.APP_NAME): 0}
    server, api = api_factory(scheduled_prod, replicas)
    assert run_job(scheduled_prod, "embeddings-wake-0800", api) == 0
    assert replicas[("inference", inference.APP_NAME)] == 7
    assert ("patch", f"inference/{inference.APP_NAME}") not in server.log


def test_the_role_refuses_any_other_deployment(
    scheduled_prod: Objects, api_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    replicas = {("inference", inference.APP_NAME): 1, ("inference", "other"): 3}
    _, api = api_factory(scheduled_prod, replicas)
    targets = scaler.parse_targets("sleep", ["inference/other", f"inference/{inference.APP_NAME}"])
    assert scaler.run(api, "sleep", targets) == 1
    assert replicas == {("inference", inference.APP_NAME): 0, ("inference", "other"): 3}
    assert "HTTP 403" in capsys.readouterr().err


def test_in_cluster_address_and_bad_arguments() -> None:
    api = scaler.KubeApi.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    )
    assert api.base_url == "https://[fd00::1]:443"
    assert scaler.main(["wake", "inference/embeddings"]) == 2
    assert scaler.main(["nap", "inference/embeddings"]) == 2
    assert scaler.main(["sleep"]) == 2


# --- Converging on the current window -------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY_EVENING = datetime(2026, 12, 11, 19, 1, tzinfo=BERLIN)
"""After Friday's closing (18:00) and before Monday's opening: the `up` of the finding."""
MONDAY_MORNING = datetime(2026, 12, 14, 9, 30, tzinfo=BERLIN)
SERVER = ("inference", inference.APP_NAME)
SPARE = (headroom.NAMESPACE, headroom.APP_NAME)


def converge_job(objects: Objects) -> Mapping[str, Any]:
    (job,) = [o for o in objects if o["kind"] == "Job"]
    return job


def run_converge(objects: Objects, api: scaler.KubeApi, now: datetime) -> int:
    (container,) = converge_job(objects)["spec"]["template"]["spec"]["containers"]
    action, *args = container["command"][2:]
    assert action == "converge"
    awake, specs = scaler.parse_awake(args)
    return scaler.converge(api, awake, scaler.parse_targets(action, specs), now)


def test_an_up_after_closing_time_leaves_no_gpu_asked_for(
    scheduled_prod: Objects, api_factory: Any
) -> None:
    """Whatever the Deployments hold when they are created (one replica from an older program, or
    a count set by someone), the converge Job of their creation puts them to sleep outside the
    windows: no pod asks for a GPU, so the autoscaler removes the node."""
    replicas = {SERVER: 1, SPARE: 1}
    _, api = api_factory(scheduled_prod, replicas)
    assert run_converge(scheduled_prod, api, FRIDAY_EVENING) == 0
    assert replicas == {SERVER: 0, SPARE: 0}


def test_an_up_inside_a_window_wakes_what_it_created(
    scheduled_prod: Objects, api_factory: Any
) -> None:
    replicas = {SERVER: 0, SPARE: 0}
    _, api = api_factory(scheduled_prod, replicas)
    assert run_converge(scheduled_prod, api, MONDAY_MORNING) == 0
    assert replicas == {SERVER: 2, SPARE: 1}  # prod: hpaMinReplicas 2, gpuHeadroom 1


def test_a_changed_headroom_holds_from_the_up_not_the_next_morning(api_factory: Any) -> None:
    """Finding 11: placeholders running at the old gpuHeadroom were left alone by every wake until
    a night had put them to zero. A new gpuHeadroom renames the converge Job (so `up` runs it),
    and a wake sets the placeholders to the target whatever they run at."""
    before = run_stack("prod", {"servingHours": HOURS}).cluster_objects()
    after = run_stack("prod", {"servingHours": HOURS, "gpuHeadroom": 2}).cluster_objects()
    assert converge_job(after)["metadata"]["name"] != converge_job(before)["metadata"]["name"]
    replicas = {SERVER: 5, SPARE: 1}
    _, api = api_factory(after, replicas)
    assert run_converge(after, api, MONDAY_MORNING) == 0
    assert replicas == {SERVER: 5, SPARE: 2}  # the HPA's count stays
    replicas[SPARE] = 1
    assert run_job(after, "embeddings-wake-0800", api) == 0
    assert replicas == {SERVER: 5, SPARE: 2}


def test_a_wake_by_hand_is_not_undone_by_the_next_up(scheduled_prod: Objects) -> None:
    """The Job runs again only with a new name: a new Deployment uid (creation, replacement) or new
    schedule arguments. An `up` that changes anything else, or nothing, leaves a Deployment woken
    by hand (README) running until the next closing edge."""
    job = converge_job(scheduled_prod)
    assert job["metadata"]["name"].startswith(f"{inference.APP_NAME}-converge-")
    again = run_stack("prod", {"servingHours": HOURS, "podCpuRequest": "2"}).cluster_objects()
    assert converge_job(again)["metadata"]["name"] == job["metadata"]["name"]
    assert "ttlSecondsAfterFinished" not in job["spec"]


def test_the_job_name_follows_the_deployments_identity() -> None:
    command = schedule.command("sleep", ())
    same = schedule.converge_job_name(["uid-a", "uid-b"], command)
    assert schedule.converge_job_name(["uid-a", "uid-b"], command) == same
    assert schedule.converge_job_name(["uid-a", "uid-c"], command) != same  # a replacement
    assert len(same) <= 63  # a label value (the Job's pods carry it as job-name)


def test_the_converge_job_runs_as_the_cron_jobs_do(scheduled_prod: Objects) -> None:
    (cron,) = [j for j in cron_jobs(scheduled_prod).values() if "sleep" in j["metadata"]["name"]]
    job_spec = converge_job(scheduled_prod)["spec"]
    pod, cron_pod = job_spec["template"]["spec"], job_pod(cron)
    assert {k: v for k, v in pod.items() if k != "containers"} == {
        k: v for k, v in cron_pod.items() if k != "containers"
    }
    (container,), (cron_container,) = pod["containers"], cron_pod["containers"]
    assert {k: v for k, v in container.items() if k != "command"} == {
        k: v for k, v in cron_container.items() if k != "command"
    }
    assert job_spec["template"]["metadata"]["labels"] == dict(schedule.LABELS)


@pytest.mark.parametrize(
    ("now", "awake"),
    [
        (datetime(2026, 12, 14, 5, 59, tzinfo=UTC), True),  # Sunday 22:00 to Monday 06:00 (UTC)
        (datetime(2026, 12, 14, 6, 0, tzinfo=UTC), False),
        (datetime(2026, 12, 13, 21, 59, tzinfo=UTC), False),
        (datetime(2026, 12, 13, 22, 0, tzinfo=UTC), True),
    ],
)
def test_a_span_past_the_week_end_wraps(now: datetime, awake: bool) -> None:
    hours = ServingHours("UTC", (ServingWindow((6,), 22 * 60, 6 * 60),))
    spans = tuple(config_awake_spans(hours.windows))
    assert scaler.Awake("UTC", spans).at(now) is awake


def test_the_window_is_read_on_the_zones_clock() -> None:
    """08:00-18:00 in Berlin is 07:00-17:00 UTC in winter: 07:30 UTC is inside."""
    spans = tuple(
        config_awake_spans(ServingHours("Europe/Berlin", (ServingWindow((0,), 480, 1080),)).windows)
    )
    awake = scaler.Awake("Europe/Berlin", spans)
    assert awake.at(datetime(2026, 12, 14, 7, 30, tzinfo=UTC))
    assert not awake.at(datetime(2026, 12, 14, 6, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    "argv",
    [
        ["converge", "inference/embeddings>=1"],
        ["converge", "--timezone", "Mars/Olympus", "--awake", "0-60", "inference/embeddings>=1"],
        ["converge", "--timezone", "UTC", "--awake", "60-30", "inference/embeddings>=1"],
        ["converge", "--timezone", "UTC", "--awake", "0-60"],
        ["wake", "inference/embeddings>=0"],
        ["wake", "inference/embeddings=x"],
    ],
)
def test_bad_converge_arguments_are_refused(argv: list[str]) -> None:
    assert scaler.main(argv) == 2
