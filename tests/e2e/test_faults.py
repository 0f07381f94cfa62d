"""The operator under faults, on the session's dev cluster (real operator, real runtime pods,
traffic through the local router): API server errors, dropped connections, slow answers and
409 storms; watches cut and their history compacted (410 Gone); the operator killed at every
rollout phase; a runtime pod killed over and over; children deleted or edited behind the
operator's back; two spec changes within a second; bearer-token auth from a Secret; and, last
of the session, every API permission the operator used is granted by its RBAC.

Each scenario converges, the stable version keeps serving (no failed request answered by it)
and status tells the truth. Faults come from the API server's ``/debug/faults`` hook
(``mmop.devcluster.apiserver.faults``); every test checks that its faults really fired.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mmop.devcluster.cluster import DevCluster
from mmop.runtime import contract
from tests.support.cluster import OPERATOR_ENV, apply
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic, infer_body
from tests.support.wait import wait_until

Kubectl = Callable[..., str]
OPERATOR_AGENT = "mmop-operator/"  # the operator's own client; kopf says "kopf/..."
RBAC_FILE = Path(__file__).resolve().parents[1] / "data" / "operator-rbac.yaml"
FAST = {"stepInterval": "2s", "scaleDownDelaySeconds": 1}


class Api:
    """Direct reads of the dev cluster's API server, and its debug endpoints."""

    def __init__(self, cluster: DevCluster) -> None:
        self.http = httpx.Client(
            base_url=cluster.api_url,
            timeout=30,
            headers=cluster.api_headers,
            verify=cluster.api_ssl_context(),
        )

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.http.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def status(self, model: str) -> dict[str, Any]:
        body = self.get(f"/apis/mmop.io/v1alpha1/namespaces/default/multimodalmodels/{model}")
        assert body is not None, f"model {model} is gone"
        status: dict[str, Any] = body.get("status") or {}
        return status

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/default/deployments/{name}")

    def virtual_service(self, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/networking.istio.io/v1/namespaces/default/virtualservices/{name}")

    def weights(self, model: str) -> dict[str, int]:
        vs = self.virtual_service(model)
        assert vs is not None
        route = vs["spec"]["http"][0]["route"]
        return {r["destination"]["subset"]: r["weight"] for r in route}

    def add_fault(self, **rule: Any) -> int:
        response = self.http.post("/debug/faults", json=rule)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def faults(self) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in self.http.get("/debug/faults").json()["rules"]}

    def clear_faults(self) -> None:
        self.http.delete("/debug/faults").raise_for_status()

    def compact(self) -> None:
        self.http.post("/debug/compact").raise_for_status()

    def events(self, model: str) -> list[tuple[str, str]]:
        """(reason, message) of the model's Events, oldest first."""
        body = self.get(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D" + model
        )
        assert body is not None
        return [(e["reason"], e["message"]) for e in body["items"]]

    def reasons(self, model: str) -> Counter[str]:
        return Counter(reason for reason, _ in self.events(model))


@pytest.fixture(scope="session")
def api(cluster: DevCluster) -> Iterator[Api]:
    handle = Api(cluster)
    yield handle
    handle.http.close()


@pytest.fixture(autouse=True)
def clean_faults(cluster: DevCluster, api: Api) -> Iterator[None]:
    """No fault outlives its test, and the session's operator is running after every test."""
    yield
    api.clear_faults()
    if cluster.operator is None or cluster.operator.poll() is not None:
        cluster.start_operator(env=OPERATOR_ENV)


def _report(test: str, traffic: Traffic, mark: int, **figures: Any) -> None:
    """One line of figures for docs/reliability.md (shown with -s)."""
    answers = Counter(f"{code}/{version or '-'}" for code, version in traffic.answers[mark:])
    print(f"\nfigures {test}: requests={sum(answers.values())} {dict(answers)} {figures}")


def _stable_failures(traffic: Traffic, mark: int, stable: str) -> list[tuple[int, str]]:
    return [(code, v) for code, v in traffic.answers[mark:] if v == stable and code != 200]


def _promoted(api: Api, model: str, version: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = api.status(model)
        done = status.get("stableVersion") == version and status.get("phase") == "Ready"
        return status if done and status.get("canaryVersion") is None else None

    return probe


def _assert_settled_on(api: Api, model: str, version: str) -> dict[str, Any]:
    """Status and children agree: one version left, all weight on it, its pods ready."""

    def settled() -> dict[str, Any] | None:
        status = _promoted(api, model, version)()
        if status is None or [v["name"] for v in status["versions"]] != [version]:
            return None  # the old stable is still retiring
        others = api.get(
            f"/apis/apps/v1/namespaces/default/deployments?labelSelector=mmop.io/model%3D{model}"
        )
        names = [d["metadata"]["name"] for d in (others or {}).get("items", [])]
        return status if names == [f"{model}-{version}"] else None

    status = wait_until(settled, within=60, what=f"{version} alone, the old stable retired")
    assert status["canaryWeight"] == 0
    assert status["versions"][0]["weight"] == 100
    assert status["readyReplicas"] >= 1
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "StableServing")
    assert api.weights(model) == {version: 100}
    deployment = api.deployment(f"{model}-{version}")
    assert deployment is not None and deployment["status"].get("readyReplicas", 0) >= 1
    return status


def test_api_errors_dropped_connections_slow_answers_and_409_storms(
    api: Api, kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    agent = OPERATOR_AGENT
    rules = [
        # 500s on its status write and on creating the canary's Deployment
        api.add_fault(
            verbs=["patch"], resources=["multimodalmodels/status"], userAgent=agent, code=500
        ),
        api.add_fault(verbs=["create"], resources=["deployments"], userAgent=agent, code=500),
        # a connection cut before the answer (what a timeout or a load balancer does)
        api.add_fault(verbs=["list"], resources=["pods"], userAgent=agent, drop=True),
        # slow answers
        api.add_fault(
            verbs=["get"], resources=["multimodalmodels"], userAgent=agent, delaySeconds=3, count=2
        ),
        # a storm of conflicts on everything it writes (it retries a 409 soon, without the
        # growing back-off meant for a failing server: with that, 30 conflicts took minutes)
        api.add_fault(
            verbs=["create", "patch"],
            resources=[
                "deployments",
                "services",
                "virtualservices",
                "destinationrules",
                "multimodalmodels/status",
            ],
            userAgent=agent,
            code=409,
            count=30,
        ),
    ]
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2", **FAST))
    wait_until(_promoted(api, ready_model, "v2"), within=120, what="promotion despite faults")
    fired = api.faults()
    assert [fired[r]["remaining"] for r in rules] == [0] * len(rules), fired
    status = _assert_settled_on(api, ready_model, "v2")
    assert [h["version"] for h in status["history"]] == ["v2"]
    assert status["history"][0]["result"] == "Promoted"
    assert api.reasons(ready_model)["CanaryCreated"] == 1
    assert _stable_failures(traffic, mark, "v1") == []
    assert _stable_failures(traffic, mark, "v2") == []
    _report("api-faults", traffic, mark, faults={r: fired[r]["hits"] for r in rules})


def test_cut_watches_compacted_history_and_two_changes_within_a_second(
    api: Api, kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    api.compact()  # every watch (kopf's, the kubelet's, the router's) ends; resuming gets 410
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2", **FAST))
    time.sleep(0.5)
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v3", **FAST))
    api.compact()

    compactions = 2

    def promoted_while_compacting() -> dict[str, Any] | None:
        nonlocal compactions
        api.compact()
        compactions += 1
        return _promoted(api, ready_model, "v3")()

    status = wait_until(promoted_while_compacting, within=180, what="v3 promoted", every=2)
    assert [h["version"] for h in status["history"] if h["result"] == "Promoted"] == ["v3"]
    assert {h["result"] for h in status["history"] if h["version"] == "v2"} <= {"Superseded"}
    assert api.deployment(f"{ready_model}-v2") is None
    answered = {v for _, v in traffic.answers[mark:]}
    assert "v2" not in answered, Counter(traffic.answers[mark:])
    assert _stable_failures(traffic, mark, "v1") == []
    _assert_settled_on(api, ready_model, "v3")
    _report("compaction+rapid-changes", traffic, mark, compactions=compactions)

    # kopf resumed its watch: a model created after the compaction gets its reconcile loop
    other = f"{ready_model}-w"
    api.compact()
    apply(kubectl, model_manifest(other, source=tiny_clip))
    try:
        wait_until(
            lambda: api.status(other).get("phase") == "Ready",
            within=120,
            what="a model created after compaction reconciled",
        )
    finally:
        kubectl("delete", "multimodalmodel", other, "--wait=false")


def test_operator_killed_at_every_rollout_phase(
    cluster: DevCluster, api: Api, kubectl: Kubectl, tiny_clip: Path, model_name: str
) -> None:
    name = model_name

    def restart() -> None:
        cluster.start_operator(env=OPERATOR_ENV)

    def killed_while(phase: str) -> dict[str, Any]:
        cluster.kill_operator()
        frozen = api.status(name)
        assert frozen["phase"] == phase, frozen
        time.sleep(3)  # more than a step interval: nothing moves without the operator
        assert api.status(name)["phase"] == phase
        return frozen

    # Deploying: the first version's pod is still loading
    apply(kubectl, model_manifest(name, source=tiny_clip, **FAST))
    wait_until(
        lambda: (
            api.status(name).get("phase") == "Deploying" and api.reasons(name)["Deploying"] == 1
        ),
        within=60,
        what="Deploying",
        every=0.1,
    )
    killed_while("Deploying")
    restart()
    wait_until(lambda: api.status(name).get("phase") == "Ready", within=120, what="v1 Ready")
    traffic = Traffic(cluster.router_url, name).start()
    try:
        # Progressing at weight 0, before the canary is verified
        apply(kubectl, model_manifest(name, source=tiny_clip, version="v2", **FAST))
        wait_until(
            lambda: (
                (s := api.status(name)).get("canaryVersion") == "v2"
                and not (s.get("rollout") or {}).get("verifiedAt")
                and api.reasons(name)["CanaryCreated"] == 1
            ),
            within=60,
            what="canary v2 created, not yet verified",
            every=0.1,
        )
        frozen = killed_while("Progressing")
        assert frozen["canaryWeight"] == 0
        restart()
        wait_until(_promoted(api, name, "v2"), within=150, what="v2 promoted after the restart")
        wait_until(lambda: api.deployment(f"{name}-v1") is None, within=60, what="v1 retired")

        # RollingBack: a canary failing requests; its removal is held up (deletes fail) so the
        # operator dies with the rollback half done
        mark = traffic.mark()
        hold = api.add_fault(
            verbs=["delete"],
            resources=["deployments"],
            userAgent=OPERATOR_AGENT,
            code=500,
            count=1000,
        )
        bad = model_manifest(name, source=tiny_clip, version="v3", **FAST)
        bad["spec"]["runtime"]["env"] = [{"name": "MMOP_FAULT_ERROR_RATE", "value": "0.7"}]
        apply(kubectl, bad)
        wait_until(
            lambda: (
                api.status(name).get("phase") == "RollingBack" and api.faults()[hold]["hits"] >= 1
            ),
            within=150,
            what="RollingBack, its second half held up",
        )
        frozen = killed_while("RollingBack")
        assert frozen["canaryWeight"] == 0 and api.weights(name).get("v3", 0) == 0
        api.clear_faults()
        restart()
        failed = wait_until(
            lambda: (s := api.status(name)).get("phase") == "Failed" and s,
            within=60,
            what="rollback finished after the restart",
        )
        assert failed["stableVersion"] == "v2" and failed.get("canaryVersion") is None
        wait_until(lambda: api.deployment(f"{name}-v3") is None, within=30, what="canary removed")
        # A pass writes the status, then its Events: the kill below must not land between them
        # (an operator killed there loses that pass's Events; docs/operator.md).
        wait_until(
            lambda: api.reasons(name)["RolledBack"] == 1, within=30, what="the RolledBack event"
        )

        # Failed: a restart does not retry the failed revision
        history = len(failed["history"])
        killed_while("Failed")
        restart()
        time.sleep(6)  # a few reconcile passes
        after = api.status(name)
        assert after["phase"] == "Failed" and len(after["history"]) == history
        assert api.deployment(f"{name}-v3") is None
        # v1 and v2 (the stables in turn) failed nothing throughout
        assert _stable_failures(traffic, 0, "v1") == []
        assert _stable_failures(traffic, 0, "v2") == []
        _report("operator-kills", traffic, 0, kills=4, rollback_mark=mark)
    finally:
        traffic.stop()
        kubectl("delete", "multimodalmodel", name, "--wait=false", check=False)

    # resumed, never repeated: each step of the story happened once
    reasons = api.reasons(name)
    assert reasons["Deploying"] == 1, reasons
    assert reasons["CanaryCreated"] == 2, reasons  # v2 and v3
    assert reasons["Promoted"] == 1 and reasons["RolledBack"] == 1, reasons
    verified = [m for r, m in api.events(name) if r == "CanaryVerified"]
    assert sum(m.startswith("canary v2 ") for m in verified) == 1, verified
    assert [h["result"] for h in after["history"]] == ["Promoted", "RolledBack"]


def test_a_crash_looping_pod_degrades_status_then_recovers(
    cluster: DevCluster, api: Api, kubectl: Kubectl, tiny_clip: Path, model_name: str
) -> None:
    name = model_name
    manifest = model_manifest(name, source=tiny_clip, **FAST)
    manifest["spec"]["replicas"] = 2
    apply(kubectl, manifest)
    kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
    wait_until(lambda: api.status(name).get("readyReplicas") == 2, within=120, what="2 pods ready")
    traffic = Traffic(cluster.router_url, name).start()
    mark = traffic.mark()
    victim = ""
    killed: set[int] = set()
    try:
        while len(killed) < 3:  # kill one pod's process each time it runs again: CrashLoopBackOff
            pids = wait_until(
                lambda chosen=victim: {
                    p: pid
                    for p, pid in cluster.pids().items()
                    if name in p and chosen in (p, "") and pid not in killed
                },
                within=60,
                what="the pod's process, started again",
                every=0.1,
            )
            victim, pid = sorted(pids.items())[0]
            with contextlib.suppress(ProcessLookupError):  # it may have just died by itself
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        degraded = wait_until(
            lambda: (s := api.status(name)).get("phase") == "Degraded" and s,
            within=30,
            what="phase Degraded while a pod crash-loops",
        )
        ready = next(c for c in degraded["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"  # the other pod serves
        assert degraded["readyReplicas"] == 1 and degraded["replicas"] == 2
        assert "1/2" in ready["message"]
        # left alone, it comes back: Ready with both pods, the restarts on record
        wait_until(
            lambda: (s := api.status(name)).get("phase") == "Ready" and s.get("readyReplicas") == 2,
            within=120,
            what="recovery",
        )
        pod = api.get(f"/api/v1/namespaces/default/pods/{victim.split('/')[1]}")
        assert pod is not None
        assert pod["status"]["containerStatuses"][0]["restartCount"] >= len(killed)
    finally:
        traffic.stop()
        kubectl("delete", "multimodalmodel", name, "--wait=false", check=False)
    answers = traffic.answers[mark:]
    failed = [a for a in answers if a[0] != 200]
    # sequential traffic: at most the request in flight at each kill fails
    assert len(failed) <= len(killed), Counter(answers)
    assert len(answers) > 20
    _report("crash-loop", traffic, mark, kills=len(killed))


def test_children_deleted_or_edited_behind_the_operators_back(
    api: Api, kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    apply(
        kubectl,
        model_manifest(
            ready_model, source=tiny_clip, version="v2", stepInterval="4s", scaleDownDelaySeconds=1
        ),
    )
    canary = f"{ready_model}-v2"
    first = wait_until(
        lambda: api.deployment(canary), within=60, what="canary Deployment", every=0.1
    )
    kubectl("delete", "deployment", canary, "--wait=false")
    wait_until(
        lambda: (
            (d := api.deployment(canary)) is not None
            and d["metadata"]["uid"] != first["metadata"]["uid"]
        ),
        within=30,
        what="canary Deployment recreated",
    )
    wait_until(
        lambda: api.status(ready_model).get("canaryWeight") == 50, within=120, what="canary at 50%"
    )
    # someone sends everything to the canary by hand: the operator puts its weights back
    vs = api.virtual_service(ready_model)
    assert vs is not None
    vs["spec"]["http"][0]["route"][0]["weight"] = 100
    vs["spec"]["http"][0]["route"][1]["weight"] = 0
    kubectl("replace", "-f", "-", stdin=yaml.safe_dump(vs))
    wait_until(
        lambda: api.weights(ready_model).get("v2", 100) > 0,
        within=30,
        what="the canary's weight restored",
        every=0.2,
    )
    wait_until(_promoted(api, ready_model, "v2"), within=120, what="promotion")
    status = _assert_settled_on(api, ready_model, "v2")
    assert api.reasons(ready_model)["CanaryCreated"] == 1
    assert [h["version"] for h in status["history"]] == ["v2"]
    assert _stable_failures(traffic, mark, "v1") == []
    _report("children-edited", traffic, mark)


def test_bearer_token_from_a_secret(
    cluster: DevCluster, api: Api, kubectl: Kubectl, tiny_clip: Path, model_name: str
) -> None:
    name, token = model_name, "s3cret-" + model_name
    kubectl("create", "secret", "generic", f"{name}-auth", f"--from-literal=token={token}")
    manifest = model_manifest(name, source=tiny_clip, **FAST)
    manifest["spec"]["runtime"]["authSecretRef"] = {"name": f"{name}-auth", "key": "token"}
    apply(kubectl, manifest)
    traffic: Traffic | None = None
    try:
        kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
        url = f"{cluster.router_url}{contract.infer_path(name)}"
        host = {"Host": f"{name}.default"}
        anonymous = httpx.post(url, json=infer_body(), headers=host, timeout=30)
        wrong = httpx.post(
            url, json=infer_body(), timeout=30, headers=host | {"Authorization": "Bearer nope"}
        )
        right = httpx.post(
            url, json=infer_body(), timeout=30, headers=host | {"Authorization": f"Bearer {token}"}
        )
        assert anonymous.status_code == 401 and wrong.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in anonymous.json()["error"]
        assert right.status_code == 200, right.text
        assert right.headers["X-Mmop-Version"] == "v1"
        # probes stay open (the pod is Ready); the operator's own test inference carries the
        # token it read from the Secret, so the canary is verified and promoted
        traffic = Traffic(cluster.router_url, name, headers={"Authorization": f"Bearer {token}"})
        traffic.start()
        mark = traffic.mark()
        apply(kubectl, manifest | {"spec": manifest["spec"] | {"version": "v2"}})
        wait_until(_promoted(api, name, "v2"), within=150, what="promotion with auth")
        assert api.reasons(name)["CanaryVerified"] == 1
        assert {code for code, _ in traffic.answers[mark:]} == {200}
        _report("auth", traffic, mark)
        secret = json.loads(kubectl("get", "secret", f"{name}-auth", "-o", "json"))
        assert base64.b64decode(secret["data"]["token"]).decode() == token
    finally:
        if traffic is not None:
            traffic.stop()
        kubectl("delete", "multimodalmodel", name, "--wait=false", check=False)
        kubectl("delete", "secret", f"{name}-auth", check=False)


# --- least privilege ---------------------------------------------------------------------------


def _granted() -> set[tuple[str, str, str]]:
    """(verb, group, resource[/subresource]) the operator's RBAC grants when it watches the
    whole cluster (as here) with Secrets granted in the models' namespace
    (rbac.secretNamespaces: [default]): every rule except those only for a namespaced install."""
    rules = yaml.safe_load(RBAC_FILE.read_text())["rules"]
    return {
        (verb, rule["apiGroup"], rule["resource"])
        for rule in rules
        if rule.get("when", "always") in ("always", "secretAccess")
        for verb in rule["verbs"]
    }


def _rbac_resource(record: dict[str, Any]) -> str:
    sub = record["subresource"]
    return str(record["resource"]) + (f"/{sub}" if sub else "")


def _used(api: Api) -> set[tuple[str, str, str, bool]]:
    """(verb, group, resource[/subresource], namespaced) of every request the operator made
    this session: writes from the audit log, reads from the read log."""
    agents = ("kopf/", OPERATOR_AGENT)
    used: set[tuple[str, str, str, bool]] = set()
    for record in api.http.get("/debug/audit").json()["records"]:
        if not record["user_agent"].startswith(agents) or not record["resource"]:
            continue  # (failed writes the server refused before resolving the resource)
        verb = {"apply": "patch"}.get(record["verb"], record["verb"])
        resource = _rbac_resource(record)
        used.add((verb, record["group"], resource, record["namespace"] is not None))
    for record in api.http.get("/debug/reads").json()["records"]:
        if record["user_agent"].startswith(agents):
            used.add(
                (record["verb"], record["group"], _rbac_resource(record), record["namespaced"])
            )
    return used


def test_operator_used_only_what_its_rbac_grants(api: Api) -> None:
    """Runs last (see conftest): by then the operator has deployed, rolled out, rolled back,
    restarted and read a Secret."""
    used = _used(api)
    granted = _granted()
    assert {r for _, _, r, _ in used} >= {"multimodalmodels", "deployments", "pods"}
    # blockOwnerDeletion on the children: admission's check, recorded by the API server
    assert ("update", "mmop.io", "multimodalmodels/finalizers", True) in used
    missing = sorted(u for u in used if u[:3] not in granted)
    assert missing == [], f"used without a grant in {RBAC_FILE.name}: {missing}"
    unused = sorted(granted - {u[:3] for u in used})
    print("\nfigures rbac: used", sorted(used), "\ngranted but unused this session:", unused)
    # what the operator must never do, whatever the rules say
    assert not {
        u
        for u in used
        if u[0] in ("update", "deletecollection") and not u[2].endswith("/finalizers")
    }
    # Secrets: read by name, and the per-model smoke-test token created; never list or watch
    assert not {u for u in used if u[2] == "secrets" and u[0] not in ("get", "create")}
