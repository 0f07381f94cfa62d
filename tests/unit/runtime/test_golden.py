"""runtime/golden.py: the built-in golden sets and the parsing of a user's golden-set ConfigMap."""

from __future__ import annotations

import base64
import io
import json
import wave
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mmop.runtime import contract, golden


@pytest.mark.parametrize("task", contract.TASKS)
def test_every_task_has_at_least_eight_distinct_samples(task: str) -> None:
    samples = golden.golden_set(task)
    assert len(samples) >= 8
    bodies = [json.dumps(body, sort_keys=True) for body in samples.values()]
    assert len(set(bodies)) == len(bodies)
    # each is a valid request body by the same rules a user's ConfigMap is held to
    assert golden.parse_golden_set({k: json.dumps(v) for k, v in samples.items()}) == samples
    assert golden.golden_set(task) == samples  # deterministic


def _first(body: dict[str, object], name: str) -> bytes:
    for tensor in body["inputs"]:  # type: ignore[attr-defined]
        if tensor["name"] == name:
            return base64.b64decode(tensor["data"][0])
    raise AssertionError(f"no input {name}")


def test_images_decode_and_vary_in_size_and_content() -> None:
    samples = golden.golden_set(contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION)
    images = [Image.open(io.BytesIO(_first(b, "image"))) for b in samples.values()]
    assert len({im.size for im in images}) >= 5
    assert len({im.convert("RGB").tobytes() for im in images}) == len(images)
    label_sets = {
        tuple(t["data"]) for b in samples.values() for t in b["inputs"] if t["name"] == "labels"
    }
    assert len(label_sets) >= 3 and all(len(s) >= 2 for s in label_sets)


def test_audio_clips_are_wav_of_different_lengths() -> None:
    samples = golden.golden_set(contract.TASK_ASR)
    lengths = set()
    for body in samples.values():
        with wave.open(io.BytesIO(_first(body, "audio"))) as w:
            assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
            lengths.add(w.getnframes())
    assert len(lengths) >= 5


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        golden.golden_set("translation")


GOOD = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})


def test_a_configmap_gives_one_sample_per_key() -> None:
    got = golden.parse_golden_set({"b": GOOD, "a": GOOD})
    assert list(got) == ["a", "b"]
    assert got["a"]["inputs"][0]["data"] == ["hi"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no samples"),
        ({"cat": "{not json"}, "sample 'cat' is not JSON"),
        ({"cat": "[1, 2]"}, "sample 'cat' is not an OIP v2 infer request: expected a JSON object"),
        ({"cat": '{"inputs": []}'}, "'inputs' must be a non-empty list"),
        (
            {
                "ok": GOOD,
                "cat": '{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}',
            },
            "sample 'cat' is not an OIP v2 infer request: inputs[0].data must be a list",
        ),
        (
            {"cat": '{"inputs": [{"name": 3, "shape": [1], "datatype": "BYTES", "data": []}]}'},
            "inputs[0].name must be a string",
        ),
    ],
)
def test_bad_samples_are_named(data: dict[str, str], message: str) -> None:
    with pytest.raises(golden.GoldenSetError) as error:
        golden.parse_golden_set(data)
    assert message in str(error.value)


def test_the_examples_golden_set_configmap_parses() -> None:
    root = Path(__file__).resolve().parents[3]
    doc = yaml.safe_load((root / "examples" / "golden-sets" / "clip-golden-set.yaml").read_text())
    model = yaml.safe_load((root / "examples" / "clip-quality.yaml").read_text())
    assert doc["kind"] == "ConfigMap"
    assert doc["metadata"]["name"] == model["spec"]["rollout"]["quality"]["goldenSet"]
    assert len(golden.parse_golden_set(doc["data"])) >= 4
