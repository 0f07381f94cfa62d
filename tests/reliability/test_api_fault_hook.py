"""The embedded API server's fault-injection hook (``/debug/faults``) that the operator's fault
tests (tests/e2e/test_faults.py) rely on: it does what a rule says, to the requests it names,
as many times as it says, and refuses rules that make no sense."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mmop.devcluster.apiserver import ApiServer
from mmop.devcluster.apiserver.server import ServerHandle

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with ApiServer.start_in_thread() as handle:
        yield handle


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    headers = {"User-Agent": "tester/1", **server.headers}
    with httpx.Client(
        base_url=server.url, timeout=10, headers=headers, verify=server.ssl_context
    ) as c:
        yield c
    httpx.delete(server.url + "/debug/faults", headers=server.headers, verify=server.ssl_context)


def _configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def test_an_error_answers_the_matching_requests_count_times(
    server: ServerHandle, http: httpx.Client
) -> None:
    rule = http.post(
        "/debug/faults",
        json={"verbs": ["create"], "resources": ["configmaps"], "code": 409, "count": 2},
    ).json()
    since = server.audit.last_index
    first = http.post(CONFIGMAPS, json=_configmap("a"))
    second = http.post(CONFIGMAPS, json=_configmap("a"))
    third = http.post(CONFIGMAPS, json=_configmap("a"))
    assert [first.status_code, second.status_code, third.status_code] == [409, 409, 201]
    assert first.json()["kind"] == "Status" and first.json()["reason"] == "Conflict"
    assert http.get(CONFIGMAPS).status_code == 200  # other verbs are not touched
    (state,) = http.get("/debug/faults").json()["rules"]
    assert (state["id"], state["hits"], state["remaining"]) == (rule["id"], 2, 0)
    # injected failures are in the audit log with their resource, and are not server bugs
    records = server.audit.records(since=since)
    assert [(r.verb, r.resource, r.code) for r in records] == [
        ("create", "configmaps", 409),
        ("create", "configmaps", 409),
        ("create", "configmaps", 201),
    ]
    assert server.server.internal_errors == []


def test_rules_match_by_user_agent_and_subresource(http: httpx.Client) -> None:
    http.post("/debug/faults", json={"userAgent": "someone-else", "code": 500, "count": 5})
    http.post("/debug/faults", json={"resources": ["configmaps/status"], "code": 500})
    assert http.get(CONFIGMAPS).status_code == 200
    assert http.post(CONFIGMAPS, json=_configmap("b")).status_code == 201
    rules = http.get("/debug/faults").json()["rules"]
    assert [r["hits"] for r in rules] == [0, 0]


def test_a_drop_closes_the_connection_without_an_answer(http: httpx.Client) -> None:
    http.post("/debug/faults", json={"verbs": ["list"], "drop": True})
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(CONFIGMAPS)
    assert http.get(CONFIGMAPS).status_code == 200


def test_a_delay_alone_only_slows_the_request_down(http: httpx.Client) -> None:
    http.post("/debug/faults", json={"verbs": ["get"], "delaySeconds": 0.2})
    http.post(CONFIGMAPS, json=_configmap("c"))
    response = http.get(CONFIGMAPS + "/c")
    assert response.status_code == 200 and response.json()["metadata"]["name"] == "c"
    assert http.get("/debug/faults").json()["rules"][0]["hits"] == 1


@pytest.mark.parametrize(
    "rule",
    [
        {"verbs": ["fly"], "code": 500},
        {"code": 200},
        {"code": 500, "count": 0},
        {"delaySeconds": -1},
        {"verbs": ["get"]},  # does nothing
        {"drop": "yes"},
        ["not", "an", "object"],
    ],
)
def test_nonsense_rules_are_refused(http: httpx.Client, rule: object) -> None:
    response = http.post("/debug/faults", json=rule)
    assert response.status_code == 400
    assert http.get("/debug/faults").json()["rules"] == []


def test_reads_are_listed_for_rbac_checks(http: httpx.Client) -> None:
    http.get(CONFIGMAPS)
    reads = http.get("/debug/reads").json()["records"]
    assert {
        "verb": "list",
        "group": "",
        "resource": "configmaps",
        "subresource": None,
        "namespaced": True,
        "user_agent": "tester/1",
    } in reads
