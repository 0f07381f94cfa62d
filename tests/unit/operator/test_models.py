"""The MultimodalModel models: defaults, revisions, and a corpus of invalid objects that both
the pydantic models and the generated CRD schema (structure + CEL) reject, naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mmop.operator import models
from tests.support.models import CrdCheck

Doc = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _metrics(*metrics: dict[str, Any]) -> Callable[[Doc], None]:
    return _set("spec.autoscaling.metrics", list(metrics))


# (id, mutation, field named by the pydantic models, field named by the CRD schema or None when
# the CRD cannot express the rule)
INVALID: list[tuple[str, Callable[[Doc], None], str, str | None]] = [
    ("missing-version", _delete("spec.version"), "spec.version", "spec"),
    ("version-not-dns", _set("spec.version", "V2_final"), "spec.version", "spec.version"),
    (
        "source-scheme",
        _set("spec.model.source", "ftp://models/clip"),
        "spec.model.source",
        "spec.model.source",
    ),
    ("unknown-task", _set("spec.model.task", "translation"), "spec.model.task", "spec.model.task"),
    ("bad-dtype", _set("spec.model.dtype", "int8"), "spec.model.dtype", "spec.model.dtype"),
    (
        "batch-size-zero",
        _set("spec.runtime.batching.maxBatchSize", 0),
        "spec.runtime.batching.maxBatchSize",
        "spec.runtime.batching.maxBatchSize",
    ),
    (
        "steps-decreasing",
        _set("spec.rollout.steps", [50, 25, 100]),
        "spec.rollout.steps",
        "spec.rollout.steps",
    ),
    (
        "steps-not-ending-at-100",
        _set("spec.rollout.steps", [10, 50]),
        "spec.rollout.steps",
        "spec.rollout.steps",
    ),
    (
        "steps-repeated",
        _set("spec.rollout.steps", [10, 10, 100]),
        "spec.rollout.steps",
        "spec.rollout.steps",
    ),
    (
        "min-above-max",
        _set("spec.autoscaling.minReplicas", 9),
        "spec.autoscaling: minReplicas",
        "spec.autoscaling.minReplicas",
    ),
    (
        "canary-weight-without-manual",
        _set("spec.rollout.canaryWeight", 30),
        "spec.rollout: canaryWeight",
        "spec.rollout.canaryWeight",
    ),
    (
        "duplicate-metric",
        _metrics(
            {"type": "CPU", "targetUtilization": 50}, {"type": "CPU", "targetUtilization": 70}
        ),
        "spec.autoscaling.metrics",
        "spec.autoscaling.metrics",
    ),
    (
        "qps-without-target",
        _metrics({"type": "QPS"}),
        "spec.autoscaling.metrics.0",
        "spec.autoscaling.metrics",
    ),
    (
        "gpu-metric-without-gpu",
        lambda d: (
            _set("spec.resources.gpu", 0)(d),
            _metrics({"type": "GPU", "targetUtilization": 80})(d),
        ),
        "spec: a GPU autoscaling metric needs resources.gpu",
        "spec.autoscaling.metrics",
    ),
    (
        "unknown-router",
        _set("spec.traffic.router", "Nginx"),
        "spec.traffic.router",
        "spec.traffic.router",
    ),
    (
        "bad-interval",
        _set("spec.rollout.stepInterval", "1 minute"),
        "spec.rollout.stepInterval",
        "spec.rollout.stepInterval",
    ),
    (
        "error-rate-above-one",
        _set("spec.rollout.analysis.maxErrorRate", 1.5),
        "spec.rollout.analysis.maxErrorRate",
        "spec.rollout.analysis.maxErrorRate",
    ),
    ("typo-field", _set("spec.replica", 3), "spec.replica", "spec"),
    (
        "bad-memory",
        _set("spec.resources.memory", "lots"),
        "spec.resources.memory",
        "spec.resources.memory",
    ),
    ("negative-replicas", _set("spec.replicas", -1), "spec.replicas", "spec.replicas"),
    (
        "env-without-name",
        _set("spec.runtime.env", [{"value": "x"}]),
        "spec.runtime.env.0.name",
        "spec.runtime.env",
    ),
    (
        "delay-above-timeout",
        lambda d: (
            _set("spec.runtime.batching.queueTimeoutSeconds", 1)(d),
            _set("spec.runtime.batching.maxDelayMs", 2000)(d),
        ),
        "spec: runtime.batching.maxDelayMs",
        "spec.runtime.batching.maxDelayMs",
    ),
    ("name-and-version-too-long", _set("spec.version", "v" + "1" * 39), "metadata.name", ""),
    (
        "env-reserved-trust-remote-code",
        _set("spec.runtime.env", [{"name": "MMOP_TRUST_REMOTE_CODE", "value": "true"}]),
        "spec: runtime.env: MMOP_TRUST_REMOTE_CODE",
        "spec.runtime.env",
    ),
    (
        "env-reserved-auth-token-in-plain-text",
        _set("spec.runtime.env", [{"name": "X", "value": "1"}, {"name": "MMOP_AUTH_TOKEN"}]),
        "spec: runtime.env: MMOP_AUTH_TOKEN",
        "spec.runtime.env",
    ),
    (
        "env-reserved-model-path",
        _set("spec.runtime.env", [{"name": "MMOP_MODEL", "value": "/etc"}]),
        "spec: runtime.env: MMOP_MODEL",
        "spec.runtime.env",
    ),
    (
        "pvc-path-escapes-the-claim",
        _set("spec.model.source", "pvc://claim/../../x"),
        "spec: model.source: a pvc:// path may not contain '..'",
        "spec.model.source",
    ),
    (
        "pvc-path-ends-in-dotdot",
        _set("spec.model.source", "pvc://claim/models/.."),
        "spec: model.source",
        "spec.model.source",
    ),
    (
        "metric-target-above-100",
        _metrics({"type": "CPU", "targetUtilization": 150}),
        "spec.autoscaling.metrics.0.targetUtilization",
        "spec.autoscaling.metrics",
    ),
    ("version-with-dot", _set("spec.version", "2026.01"), "spec.version", "spec.version"),
    ("version-leading-dash", _set("spec.version", "-2026"), "spec.version", "spec.version"),
    (
        "pod-label-mmop-key",
        _set("spec.pod", {"labels": {"mmop.io/version": "x"}}),
        "spec.pod.labels",
        "spec.pod.labels",
    ),
    (
        "pod-label-managed-by",
        _set("spec.pod", {"labels": {"app.kubernetes.io/managed-by": "me"}}),
        "spec.pod.labels",
        "spec.pod.labels",
    ),
    (
        "pod-annotation-scrape",
        _set("spec.pod", {"annotations": {"prometheus.io/scrape": "false"}}),
        "spec.pod.annotations",
        "spec.pod.annotations",
    ),
    (
        "pod-label-bad-value",
        _set("spec.pod", {"labels": {"team": "a b"}}),
        "spec.pod.labels",
        None,
    ),
    (
        "pod-run-as-root",
        _set("spec.pod", {"securityContext": {"runAsUser": 0}}),
        "spec.pod.securityContext.runAsUser",
        "spec.pod.securityContext.runAsUser",
    ),
    (
        "pod-privileged",
        _set("spec.pod", {"securityContext": {"privileged": True}}),
        "spec.pod.securityContext.privileged",
        "spec.pod.securityContext",
    ),
    (
        "spread-without-key",
        _set("spec.scheduling.topologySpreadConstraints", [{"maxSkew": 1}]),
        "spec.scheduling.topologySpreadConstraints.0.topologyKey",
        "spec.scheduling.topologySpreadConstraints",
    ),
]


@pytest.mark.parametrize("version", ["2026-01", "2026", "1a", "v2", "0"])
def test_versions_that_keep_every_name_valid_are_accepted(
    clip_doc: Doc, crd_schema: dict[str, Any], crd_check: CrdCheck, version: str
) -> None:
    clip_doc["spec"]["version"] = version
    models.parse_model(clip_doc)
    _, problems = crd_check(crd_schema, clip_doc)
    assert problems == []


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f, _ in INVALID], ids=[i for i, *_ in INVALID]
)
def test_models_reject_and_name_the_field(
    clip_doc: Doc, mutate: Callable[[Doc], None], field: str
) -> None:
    doc = copy.deepcopy(clip_doc)
    doc["metadata"]["name"] = "clip-with-a-rather-long-name-for-tests"
    mutate(doc)
    with pytest.raises(models.InvalidSpecError) as info:
        models.parse_model(doc)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "crd_field"),
    [(m, c) for _, m, _, c in INVALID if c is not None],
    ids=[i for i, _, _, c in INVALID if c is not None],
)
def test_crd_schema_rejects_and_names_the_field(
    clip_doc: Doc,
    crd_schema: dict[str, Any],
    mutate: Callable[[Doc], None],
    crd_field: str,
    crd_check: CrdCheck,
) -> None:
    doc = copy.deepcopy(clip_doc)
    doc["metadata"]["name"] = "clip-with-a-rather-long-name-for-tests"
    mutate(doc)
    _, problems = crd_check(crd_schema, doc)
    assert problems, "the CRD schema accepted an invalid object"
    assert any(p.path.startswith(crd_field) for p in problems), problems


def test_valid_example_passes_both(
    clip_doc: Doc, crd_schema: dict[str, Any], crd_check: CrdCheck
) -> None:
    models.parse_model(clip_doc)
    _, problems = crd_check(crd_schema, clip_doc)
    assert problems == []


@pytest.mark.parametrize(
    "source", ["pvc://claim/models/..clip", "pvc://claim/a..b/c", "pvc://claim", "pvc://claim/"]
)
def test_pvc_paths_with_dots_inside_names_pass_both(
    clip_doc: Doc, crd_schema: dict[str, Any], crd_check: CrdCheck, source: str
) -> None:
    doc = copy.deepcopy(clip_doc)
    doc["spec"]["model"]["source"] = source
    models.parse_model(doc)
    _, problems = crd_check(crd_schema, doc)
    assert problems == []


def test_fault_env_and_unreserved_mmop_names_pass_the_schema(
    clip_doc: Doc, crd_schema: dict[str, Any], crd_check: CrdCheck
) -> None:
    """Fault injection is refused by the operator (unless allowed), not by the schema; runtime
    settings the operator does not set (log level, limits) stay the user's."""
    doc = copy.deepcopy(clip_doc)
    doc["spec"]["runtime"]["env"] = [
        {"name": "MMOP_FAULT_ERROR_RATE", "value": "1"},
        {"name": "MMOP_LOG_LEVEL", "value": "DEBUG"},
    ]
    models.parse_model(doc)
    _, problems = crd_check(crd_schema, doc)
    assert problems == []


def test_defaults_match_the_design() -> None:
    spec = models.parse_spec(
        {
            "version": "v1",
            "model": {
                "source": "hf://openai/clip-vit-base-patch32",
                "task": "image-text-embedding",
            },
        }
    )
    assert spec.model.revision == "main"
    assert spec.model.dtype == models.Dtype.AUTO
    assert spec.model.trust_remote_code is False
    assert spec.runtime.batching.max_batch_size == 32
    assert spec.runtime.batching.max_delay_ms == 5
    assert spec.runtime.batching.max_queue_size == 256
    assert spec.runtime.batching.queue_timeout_seconds == 30
    assert spec.resources.gpu == 1
    assert spec.resources.gpu_resource == "nvidia.com/gpu"
    assert spec.traffic.router == models.Router.ISTIO
    assert spec.traffic.gateways == ["mesh"]
    assert spec.rollout.steps == [10, 25, 50, 100]
    assert spec.rollout.step_interval_seconds() == 60
    assert spec.rollout.max_failed_checks == 3
    assert spec.rollout.progress_deadline_seconds == 900
    assert spec.rollout.analysis.max_error_rate == 0.01
    assert spec.rollout.analysis.min_requests == 20
    assert spec.rollout.scale_down_delay_seconds == 60
    assert spec.autoscaling is None


def test_crd_defaults_equal_model_defaults(crd_schema: dict[str, Any], crd_check: CrdCheck) -> None:
    minimal = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "m"},
        "spec": {
            "version": "v1",
            "model": {"source": "hf://a/b", "task": "image-classification"},
            "autoscaling": {},
        },
    }
    defaulted, problems = crd_check(crd_schema, minimal)
    assert problems == []
    from_models = models.parse_spec(minimal["spec"]).wire()
    assert defaulted["spec"] == from_models


def test_revision_tracks_the_pod_template_only(clip: models.MultimodalModel) -> None:
    base = clip.spec.revision()
    assert base == clip.spec.serving().revision()
    rescaled = clip.spec.model_copy(update={"replicas": 7})
    assert rescaled.serving().revision() == base
    new_image = clip.spec.serving().model_copy(
        update={"runtime": clip.spec.runtime.model_copy(update={"image": "example/rt:2"})}
    )
    assert new_image.revision() != base
    assert clip.spec.serving().model_copy(update={"version": "v2"}).revision() != base


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5m", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert models.parse_duration(text).total_seconds() == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        models.parse_duration("soon")


def _backend_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": "v1",
        "model": {"source": "hf://openai/clip-vit-base-patch32", "task": "image-text-embedding"},
        "resources": {"gpu": 0},
    }
    for key, value in overrides.items():
        spec[key] = spec.get(key, {}) | value if isinstance(value, dict) else value
    return spec


def test_backend_fields_default_and_keep_old_revisions() -> None:
    spec = models.parse_spec(_backend_spec())
    assert (spec.runtime.backend, spec.runtime.quantization) == ("eager", "none")
    # The revisions of these specs before backend/quantization existed (commit 3d8c408): an
    # operator upgrade must not start a rollout of an unchanged model.
    assert models.parse_spec(_backend_spec(resources={"gpu": 1})).revision() == "6b7a3ee456"
    explicit = _backend_spec(resources={"gpu": 1}, runtime={"backend": "eager"})
    assert models.parse_spec(explicit).revision() == "6b7a3ee456"
    assert models.parse_spec(_backend_spec(runtime={"image": "x:1"})).revision() == "408369ae46"
    onnx = models.parse_spec(_backend_spec(runtime={"image": "x:1", "backend": "onnxruntime"}))
    assert onnx.revision() != "408369ae46"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"runtime": {"quantization": "int8"}, "resources": {"gpu": 1}}, "runs on CPU only"),
        ({"runtime": {"quantization": "int8", "backend": "onnxruntime"}}, "needs runtime.backend"),
        ({"runtime": {"quantization": "int8", "backend": "compile"}}, "needs runtime.backend"),
        ({"runtime": {"quantization": "int8"}, "model": {"dtype": "bfloat16"}}, "float32"),
        ({"runtime": {"backend": "onnxruntime"}, "model": {"dtype": "float16"}}, "float32 export"),
        (
            {"runtime": {"backend": "compile"}, "model": {"task": "image-to-text"}},
            "serve only the tasks",
        ),
    ],
)
def test_backend_combinations_that_cannot_work_are_refused(
    overrides: dict[str, Any], message: str, crd_schema: dict[str, Any], crd_check: CrdCheck
) -> None:
    spec = _backend_spec(**overrides)
    with pytest.raises(models.InvalidSpecError, match=message):
        models.parse_spec(spec)
    doc = {"apiVersion": models.API_VERSION, "kind": models.KIND, "metadata": {"name": "m"}}
    _, problems = crd_check(crd_schema, doc | {"spec": spec})
    assert any(message in p.message for p in problems), problems


@pytest.mark.parametrize(
    "overrides",
    [
        {"runtime": {"quantization": "int8"}},
        {"runtime": {"backend": "onnxruntime"}, "model": {"task": "image-classification"}},
        {"runtime": {"backend": "compile"}, "model": {"dtype": "bfloat16"}},
        {"model": {"dtype": "bfloat16"}},
    ],
)
def test_backend_combinations_that_work_are_accepted(
    overrides: dict[str, Any], crd_schema: dict[str, Any], crd_check: CrdCheck
) -> None:
    spec = _backend_spec(**overrides)
    models.parse_spec(spec)
    doc = {"apiVersion": models.API_VERSION, "kind": models.KIND, "metadata": {"name": "m"}}
    _, problems = crd_check(crd_schema, doc | {"spec": spec})
    assert problems == []
