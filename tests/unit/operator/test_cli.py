"""cli.py: `mmop render` and `mmop crd` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmop.operator import cli

ROOT = Path(__file__).resolve().parents[3]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_render_clip(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "render", "-f", str(ROOT / "examples" / "clip.yaml"))
    assert code == 0
    kinds = [(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(out)]
    assert kinds == [
        ("Deployment", "clip-v1"),
        ("Service", "clip-v1"),
        ("HorizontalPodAutoscaler", "clip-v1"),
        ("PodDisruptionBudget", "clip-v1"),
        ("Service", "clip"),
        ("DestinationRule", "clip"),
        ("VirtualService", "clip"),
    ]


def test_render_canary_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "render",
        "-f",
        str(ROOT / "examples" / "clip.yaml"),
        "--canary-version",
        "v2",
        "--weight",
        "25",
        "-o",
        "json",
    )
    assert code == 0
    items = json.loads(out)["items"]
    vs = next(o for o in items if o["kind"] == "VirtualService")
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [75, 25]
    assert {o["metadata"]["name"] for o in items if o["kind"] == "Deployment"} == {
        "clip-v1",
        "clip-v2",
    }


def test_render_names_the_bad_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "clip.yaml").read_text())
    doc["spec"]["rollout"]["steps"] = [50, 10, 100]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = _run(capsys, "render", "-f", str(bad))
    assert code == 1
    assert out == ""
    assert "spec.rollout.steps" in err and "strictly increasing" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "expected kind MultimodalModel"),
    ],
)
def test_render_rejects_other_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(content)
    code, _, err = _run(capsys, "render", "-f", str(path))
    assert code == 1 and message in err


def test_render_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "render", "-f", "/nonexistent/model.yaml")
    assert code == 1 and "No such file" in err


def test_weight_needs_canary_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys, "render", "-f", str(ROOT / "examples" / "clip.yaml"), "--weight", "10"
    )
    assert code == 1 and "--canary-version" in err


def test_crd_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _run(capsys, "crd", "--root", str(tmp_path), "--check")[0] == 1
    assert _run(capsys, "crd", "--root", str(tmp_path))[0] == 0
    assert _run(capsys, "crd", "--root", str(tmp_path), "--check")[0] == 0
