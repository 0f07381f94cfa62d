"""`helm lint` of charts/mmop, plain and --strict (warnings fail), with default and full values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def test_lint_default_values(helm, chart_dir: Path) -> None:
    out = helm.run("lint", str(chart_dir))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("with_full_values", [False, True], ids=["default", "full"])
def test_lint_strict(helm, chart_dir: Path, full_values: Path, with_full_values: bool) -> None:
    args = ["lint", "--strict", str(chart_dir)]
    if with_full_values:
        args += ["--values", str(full_values)]
    out = helm.run(*args)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out
    assert "[ERROR]" not in out


def test_chart_is_helm_v2_api_and_ships_the_generated_crd(chart_dir: Path) -> None:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "mmop"
    root = chart_dir.parent.parent
    # Helm installs crds/ itself; the file there is `mmop crd`'s output, the same as crds/.
    assert (chart_dir / "crds" / "multimodalmodels.mmop.io.yaml").read_text() == (
        root / "crds" / "multimodalmodels.mmop.io.yaml"
    ).read_text()


def test_kube_version_floor(helm, chart_dir: Path) -> None:
    assert helm.run("template", "mmop", str(chart_dir), "--kube-version", "1.28.0")
    with pytest.raises(helm.Error, match="kubeVersion"):
        helm.run("template", "mmop", str(chart_dir), "--kube-version", "1.27.9")
