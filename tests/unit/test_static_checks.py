"""The house rules as tests: ruff (lint and format), mypy --strict on the packages and the
layer and independence contracts of import-linter ([tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts() -> None:
    """Every layer and independence contract holds (docs/architecture.md draws them)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_imports_a_conftest() -> None:
    """Shared test code lives in tests/support (bench uses it too); conftests hold fixtures."""
    pattern = re.compile(r"^\s*(from\s+[\w.]*conftest\s+import|import\s+[\w.]*conftest)", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
