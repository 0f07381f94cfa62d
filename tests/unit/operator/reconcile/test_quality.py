"""reconcile/quality.py: reading the golden set and comparing a stable pod's answers with a
canary pod's (HTTP mocked with httpx.MockTransport; the real runtime answers in tests/e2e)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from mmop.operator import kube, models
from mmop.operator.reconcile import quality as probe
from mmop.operator.reconcile.observe import PodInfo
from mmop.runtime import contract, golden, scoring

STABLE = PodInfo(name="clip-v1-a", version="v1", revision="r1", ip="10.0.0.1", ready=True)
CANARY = PodInfo(name="clip-v2-a", version="v2", revision="r2", ip="10.0.0.2", ready=True)
TASK = models.Task.ZERO_SHOT_IMAGE_CLASSIFICATION
SAMPLE = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}]}


def answer(label: str) -> dict[str, Any]:
    return {
        "outputs": [
            {"name": "scores", "shape": [1, 2], "datatype": "FP32", "data": [0.6, 0.4]},
            {"name": "label", "shape": [1], "datatype": "BYTES", "data": [label]},
        ]
    }


class FakeClient:
    """Just get_or_none for ConfigMaps."""

    def __init__(self, configmaps: dict[str, dict[str, Any]], *, error: int | None = None):
        self.configmaps = configmaps
        self.error = error
        self.asked: list[tuple[str, str | None]] = []

    async def get_or_none(
        self, kind: kube.Kind, *, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        assert kind == kube.CONFIGMAP
        self.asked.append((name, namespace))
        if self.error:
            raise kube.ApiError(self.error, {"reason": "Forbidden"}, method="GET", path=name)
        return self.configmaps.get(name)


def model(**gate: Any) -> models.MultimodalModel:
    return models.parse_model(
        {
            "apiVersion": "mmop.io/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "clip", "namespace": "ml"},
            "spec": {
                "version": "v2",
                "model": {"source": "hf://openai/clip", "task": TASK.value},
                "rollout": {"quality": gate},
            },
        }
    )


def pods(stable: Any, canary: Any, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        side = stable if request.url.host == STABLE.ip else canary
        return side(body) if callable(side) else side

    return httpx.MockTransport(handler)


async def check(
    mm: models.MultimodalModel,
    client: FakeClient,
    transport: httpx.MockTransport,
    *,
    stable: PodInfo | None = STABLE,
) -> probe.GoldenResult:
    async with httpx.AsyncClient(transport=transport) as http:
        return await probe.golden_check(
            client,  # type: ignore[arg-type]
            http,
            mm=mm,
            stable=stable,
            canary=CANARY,
            stable_token="old",
            canary_token="new",
            smoke_token="smoke-secret",
        )


async def test_builtin_set_is_sent_to_both_pods_marked_as_the_operators() -> None:
    seen: list[httpx.Request] = []
    same = httpx.Response(200, json=answer("a cat"))
    result = await check(model(), FakeClient({}), pods(same, same, seen))
    expected = golden.golden_set(TASK.value)
    assert result.problem is None
    assert (result.metric, result.samples, result.score) == (
        scoring.LABEL_AGREEMENT,
        len(expected),
        1.0,
    )
    assert result.source == "built-in golden set"
    assert len(seen) == 2 * len(expected)
    for request in seen:
        assert request.url.path == contract.infer_path("clip")
        # the genuine per-model token: the runtimes count these as the operator's, not users'
        assert request.headers[contract.SMOKE_TEST_HEADER] == "smoke-secret"
    tokens = {(r.url.host, r.headers["Authorization"]) for r in seen}
    assert tokens == {(STABLE.ip, "Bearer old"), (CANARY.ip, "Bearer new")}

    def canonical(body: Any) -> str:
        return json.dumps(body, sort_keys=True)

    sent = {canonical(json.loads(r.content)) for r in seen}
    assert sent == {canonical(b) for b in expected.values()}


async def test_disagreeing_answers_give_a_low_score() -> None:
    seen: list[httpx.Request] = []
    result = await check(
        model(),
        FakeClient({}),
        pods(
            httpx.Response(200, json=answer("a cat")),
            httpx.Response(200, json=answer("a dog")),
            seen,
        ),
    )
    assert result.problem is None and result.score == 0.0


async def test_user_configmap_samples_are_used() -> None:
    seen: list[httpx.Request] = []
    client = FakeClient({"gs": {"data": {"one": json.dumps(SAMPLE), "two": json.dumps(SAMPLE)}}})
    same = httpx.Response(200, json=answer("x"))
    result = await check(model(goldenSet="gs"), client, pods(same, same, seen))
    assert client.asked == [("gs", "ml")]
    assert (result.samples, result.score, result.source) == (2, 1.0, "golden set ConfigMap gs")
    assert all(json.loads(r.content) == SAMPLE for r in seen)


async def test_problems_hold_with_a_message_and_no_score() -> None:
    same = httpx.Response(200, json=answer("x"))
    cases = [
        (
            model(goldenSet="gs"),
            FakeClient({}),
            "golden set ConfigMap gs not found in namespace ml",
        ),
        (
            model(goldenSet="gs"),
            FakeClient({"gs": {"data": {"bad": "nope"}}}),
            "sample 'bad' is not JSON",
        ),
        (model(goldenSet="gs"), FakeClient({}, error=403), "cannot read golden set ConfigMap gs"),
    ]
    for mm, client, message in cases:
        result = await check(mm, client, pods(same, same, []))
        assert result.score is None and result.problem is not None
        assert message in result.problem
    no_stable = await check(model(), FakeClient({}), pods(same, same, []), stable=None)
    assert no_stable.score is None and "no ready pod" in (no_stable.problem or "")


async def test_unanswered_or_incomparable_samples_are_problems_not_scores() -> None:
    ok = httpx.Response(200, json=answer("x"))
    cases = [
        (ok, httpx.Response(400, json={"error": "bad image"}), "HTTP 400"),
        (httpx.Response(503, json={"error": "not ready"}), ok, "HTTP 503"),
        (ok, httpx.Response(200, json={"outputs": []}), "cannot be compared"),
        (ok, httpx.Response(200, text="not json"), "not JSON"),
    ]
    for stable, canary, message in cases:
        result = await check(model(), FakeClient({}), pods(stable, canary, []))
        assert result.score is None, message
        assert message in (result.problem or ""), result.problem
