"""Gateway API and plain Service routing end to end: the canary's share of real traffic follows
the HTTPRoute weights, or the replica ratio behind Service NAME, and promotion moves it all.
(Istio routing is exercised by test_rollout.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mmop.devcluster.cluster import DevCluster
from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

Kubectl = Callable[..., str]


@pytest.mark.parametrize("router", ["GatewayAPI", "Service"])
def test_canary_split_and_promotion(
    cluster: DevCluster, kubectl: Kubectl, tiny_clip: Path, model_name: str, router: str
) -> None:
    def manifest(version: str) -> dict[str, object]:
        # No mesh (Service): the split is the replica ratio, so two pods.
        replicas = 2 if router == "Service" else 1
        return model_manifest(
            model_name,
            source=tiny_clip,
            version=version,
            router=router,
            replicas=replicas,
            stepInterval="6s",
        )

    apply(kubectl, manifest("v1"))
    traffic: Traffic | None = None
    try:
        kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{model_name}", "--timeout=180s")
        routes = next(
            c for c in status_of(kubectl, model_name)["conditions"] if c["type"] == "RoutesReady"
        )
        assert routes["status"] == "True"
        traffic = Traffic(cluster.router_url, model_name).start()
        apply(kubectl, manifest("v2"))
        wait_until(
            lambda: status_of(kubectl, model_name).get("canaryWeight") == 50,
            within=120,
            what="canary at 50%",
        )
        if router == "GatewayAPI":
            route = json.loads(kubectl("get", "httproutes", model_name, "-o", "json"))
            weights = [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]
            assert weights == [(f"{model_name}-v1", 50), (f"{model_name}-v2", 50)]
        else:
            svc = json.loads(kubectl("get", "service", model_name, "-o", "json"))
            assert svc["spec"]["selector"] == {"mmop.io/model": model_name}
        mark = traffic.mark()
        wait_until(
            lambda: {v for _, v in traffic.answers[mark:]} >= {"v1", "v2"},
            within=30,
            what="answers from both versions",
        )
        wait_until(
            lambda: status_of(kubectl, model_name).get("stableVersion") == "v2",
            within=120,
            what="promotion",
        )
        if router == "GatewayAPI":
            route = json.loads(kubectl("get", "httproutes", model_name, "-o", "json"))
            weights = [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]
            assert weights == [(f"{model_name}-v2", 100)]
        else:
            svc = json.loads(kubectl("get", "service", model_name, "-o", "json"))
            assert svc["spec"]["selector"] == {"mmop.io/model": model_name, "mmop.io/version": "v2"}
        after = traffic.mark()
        wait_until(lambda: traffic.mark() > after + 10, within=30, what="more traffic")
        assert {v for _, v in traffic.answers[after:]} == {"v2"}
        assert [a for a in traffic.answers if a[0] != 200] == []
    finally:
        if traffic is not None:
            traffic.stop()
        kubectl("delete", "multimodalmodel", model_name, "--wait=false", check=False)
