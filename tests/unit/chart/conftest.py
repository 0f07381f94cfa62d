"""Chart fixtures: render charts/mmop with the real helm binary and parse what it prints."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "mmop"
FULL_VALUES = Path(__file__).with_name("values-full.yaml")
RBAC_DATA = ROOT / "tests" / "data" / "operator-rbac.yaml"
NAMESPACE = "mmop-system"


class Rendered(list[dict[str, Any]]):
    """Objects helm rendered, with look-ups by kind."""

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.kind(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self)


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Helm:
    binary: str
    namespace: str = NAMESPACE
    Error: ClassVar[type[Exception]] = HelmError

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise HelmError(proc.stderr.strip() or proc.stdout.strip())
        return proc.stdout

    def template(
        self,
        *,
        values: Mapping[str, str] | None = None,
        string_values: Mapping[str, str] | None = None,
        values_files: Iterable[Path] = (),
        include_crds: bool = False,
        release: str = "mmop",
    ) -> Rendered:
        """The rendered objects (empty documents dropped), in helm's order."""
        args = ["template", release, str(CHART), "--namespace", self.namespace]
        for path in values_files:
            args += ["--values", str(path)]
        for key, value in (values or {}).items():
            args += ["--set", f"{key}={value}"]
        for key, value in (string_values or {}).items():
            args += ["--set-string", f"{key}={value}"]
        if include_crds:
            args.append("--include-crds")
        return Rendered(doc for doc in yaml.safe_load_all(self.run(*args)) if doc)

    def template_error(self, **kwargs: Any) -> str:
        """helm template's error message for values that must be refused."""
        try:
            self.template(**kwargs)
        except HelmError as error:
            return str(error)
        raise AssertionError(f"helm template accepted {kwargs}")


@pytest.fixture(scope="session")
def helm(helm_bin: str) -> Helm:
    return Helm(helm_bin)


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART


@pytest.fixture(scope="session")
def full_values() -> Path:
    """A values file that switches every optional feature on."""
    return FULL_VALUES


@pytest.fixture(scope="session")
def rbac_rules() -> list[dict[str, Any]]:
    """tests/data/operator-rbac.yaml: the operator's permissions, written once."""
    rules: list[dict[str, Any]] = yaml.safe_load(RBAC_DATA.read_text())["rules"]
    return rules
