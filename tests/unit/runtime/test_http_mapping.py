"""The HTTP edge without a server: error mapping and the endpoint label of each path."""

from __future__ import annotations

import orjson
import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import compile_path
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from mmop.runtime import contract, loading
from mmop.runtime.dataplane import DataPlane
from mmop.runtime.errors import (
    BodyTimeout,
    Draining,
    FaultInjected,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    QueueTimeout,
    RuntimeFailure,
    Unauthorized,
)
from mmop.runtime.metrics import Metrics
from mmop.runtime.server.app import InferFastPath, create_app
from mmop.runtime.server.errors import error_response
from mmop.runtime.server.middleware import BearerAuthMiddleware, endpoint_of
from mmop.runtime.settings import RuntimeSettings


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("bad"), 400),
        (Unauthorized("who"), 401),
        (ModelNotFound("which"), 404),
        (PayloadTooLarge("big"), 413),
        (QueueFull("full", retry_after=2), 429),
        (NotReady("loading"), 503),
        (Draining("bye"), 503),
        (QueueTimeout("slow"), 504),
        (BodyTimeout("trickle"), 408),
        (InferenceFailed("oops"), 500),
        (FaultInjected("on purpose"), 500),
    ],
)
def test_each_error_has_its_status_and_a_json_body(error: RuntimeFailure, status: int) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert orjson.loads(bytes(response.body)) == {"error": error.message}
    assert response.media_type == "application/json"


def test_queue_full_carries_retry_after() -> None:
    assert error_response(QueueFull("full", retry_after=2)).headers["retry-after"] == "2"


def test_unexpected_errors_hide_their_text() -> None:
    response = error_response(KeyError("secret internals"))
    assert response.status_code == 500
    assert orjson.loads(bytes(response.body)) == {"error": "internal error"}


def test_rejections_are_counted_by_reason_but_failures_are_not() -> None:
    metrics = Metrics(model="m")
    error_response(QueueFull("full"), metrics=metrics)
    error_response(QueueFull("full"), metrics=metrics)
    error_response(InferenceFailed("x"), metrics=metrics)
    text = metrics.render().decode()
    assert 'mmop_rejected_requests_total{model="m",reason="queue_full"} 2.0' in text
    assert "inference_failed" not in text


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v2/models/clip/infer", "infer"),
        ("/v2/models/clip/versions/v1/infer", "infer"),
        ("/v1/embeddings", "embeddings"),
        ("/v2/models/clip", contract.ENDPOINT_METADATA),
        ("/v2", contract.ENDPOINT_METADATA),
        ("/v2/health/live", contract.ENDPOINT_HEALTH),
        ("/v2/health/ready", contract.ENDPOINT_HEALTH),
        ("/v2/models/clip/ready", contract.ENDPOINT_HEALTH),
        ("/metrics", None),
        ("/nope", contract.ENDPOINT_OTHER),
    ],
)
def test_endpoint_labels(path: str, endpoint: str | None) -> None:
    assert endpoint_of(path) == endpoint
    assert endpoint is None or endpoint in (
        *contract.INFER_ENDPOINTS,
        "metadata",
        "health",
        "other",
    )


def test_metrics_use_contract_names_in_a_private_registry() -> None:
    first, second = Metrics(model="a"), Metrics(model="b")
    first.observe_request(endpoint="infer", code=200, seconds=0.01)
    text = first.render().decode()
    assert 'mmop_requests_total{code="200",endpoint="infer",model="a"} 1.0' in text
    assert 'model="a"' not in second.render().decode()
    for name in (
        contract.METRIC_REQUEST_DURATION,
        contract.METRIC_QUEUE_DEPTH,
        contract.METRIC_QUEUE_WAIT,
        contract.METRIC_BATCH_SIZE,
        contract.METRIC_INFERENCE_DURATION,
        contract.METRIC_MODEL_LOAD,
        contract.METRIC_GPU_UTILIZATION,
        contract.METRIC_GPU_MEMORY_USED,
    ):
        assert f"# TYPE {name} " in text
    # a counter's series exists at 0 from the start (a missing series is not a zero)
    assert f'{contract.METRIC_PREPROCESS_WORKERS_REPLACED}_total{{model="a"}} 0.0' in text


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


@pytest.mark.parametrize("configured", ["s3cret", "s3cret\n", " s3cret\r\n"])
@pytest.mark.parametrize("presented", ["Bearer s3cret", "bearer  s3cret ", "BEARER s3cret"])
def test_bearer_tokens_are_normalised_on_both_sides(configured: str, presented: str) -> None:
    # A Secret made from a file ends with a newline that no client sends.
    app = BearerAuthMiddleware(_ok, token=configured, metrics=Metrics(model="m"))
    client = TestClient(app)  # no lifespan: the stub app answers HTTP only
    assert client.get("/v2/models/m", headers={"Authorization": presented}).status_code == 200
    assert client.get("/v2/models/m", headers={"Authorization": "Bearer s3cre"}).status_code == 401
    assert client.get("/v2/models/m").status_code == 401


_SOURCE = loading.ModelSource(original="/m", kind="local", location="/m")


class _RecordingHandlers:
    """The infer handler's seat: records (name, version) and answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def infer(self, name: str, request: Request, version: str | None = None) -> Response:
        self.calls.append((name, version))
        return PlainTextResponse("handler")


@pytest.mark.parametrize(
    ("method", "path", "root_path", "expected"),
    [
        ("POST", "/v2/models/clip/infer", "", ("clip", None)),
        ("POST", "/v2/models/clip/versions/3/infer", "", ("clip", "3")),
        ("GET", "/v2/models/clip/infer", "", None),  # the router answers 405 with Allow
        ("POST", "/v2/models/clip/infer/", "", None),  # the router's trailing-slash redirect
        ("POST", "/v2/models/a/b/infer", "", None),  # {name} is one segment
        ("POST", "/v2/models/clip/versions/infer", "", None),
        ("POST", "/v1/embeddings", "", None),
        ("POST", "/v2/models/clip/infer", "/mounted", None),  # the router strips root_path
    ],
)
def test_infer_requests_go_straight_to_the_handler_and_nothing_else_does(
    method: str, path: str, root_path: str, expected: tuple[str, str | None] | None
) -> None:
    handlers = _RecordingHandlers()
    routed: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        routed.append(scope["path"])
        await PlainTextResponse("router")(scope, receive, send)

    paths = [
        compile_path(path)[0]
        for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
    ]
    fast = InferFastPath(router, handlers=handlers, paths=paths)  # type: ignore[arg-type]
    client = TestClient(fast, root_path=root_path)
    response = client.request(method, path, content=b"{}", follow_redirects=False)
    if expected is None:
        assert (handlers.calls, response.text) == ([], "router")
        assert len(routed) == 1
    else:
        assert (handlers.calls, response.text) == ([expected], "handler")
        assert routed == []


def test_the_app_serves_infer_past_its_router() -> None:
    # The infer routes stay registered (OpenAPI, 405s); a request that reached one would fail.
    settings = RuntimeSettings(model="/m", task=contract.TASK_IMAGE_CLASSIFICATION)
    plane = DataPlane(settings, metrics=Metrics(model=settings.model_name), source=_SOURCE)
    app = create_app(plane)
    infer_routes = [
        route
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.path.endswith("/infer")
    ]
    assert len(infer_routes) == 2

    async def trap(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"{scope['path']} went through the router")

    for route in infer_routes:
        route.app = trap
    client = TestClient(app)  # no lifespan: the model is not loaded
    # the handler's own answers: not ready yet, and no such version
    response = client.post("/v2/models/m/infer", content=b"{}")
    assert response.status_code == 503, response.text
    response = client.post("/v2/models/m/versions/1/infer", content=b"{}")
    assert response.status_code == 404, response.text
    assert "has no version '1'" in response.json()["error"]
    # and the infer requests are still counted by the metrics middleware outside it
    assert 'endpoint="infer"' in plane.metrics.render().decode()
