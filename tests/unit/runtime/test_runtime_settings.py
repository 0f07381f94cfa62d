"""Settings: CLI options over MMOP_* env, one typed object, names shared with the operator."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from mmop.runtime import contract
from mmop.runtime.cli import build_parser, load_settings
from mmop.runtime.settings import (
    RuntimeSettings,
    Task,
    available_cpus,
    cgroup_cpu_quota,
    cli_fields,
    default_model_name,
    env_name,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MMOP_"):
            monkeypatch.delenv(key)


def test_tasks_match_the_contract() -> None:
    assert typing.get_args(Task) == contract.TASKS


def test_every_contract_env_name_is_a_setting() -> None:
    names = {env_name(field) for field in RuntimeSettings.model_fields}
    contract_envs = {value for key, value in vars(contract).items() if key.startswith("ENV_")}
    assert contract_envs <= names, contract_envs - names


def test_defaults_follow_the_design() -> None:
    settings = load_settings(["--model", "/models/clip", "--task", "image-classification"])
    assert settings.port == contract.HTTP_PORT
    assert settings.host == "0.0.0.0"
    assert (settings.max_batch_size, settings.max_delay_ms, settings.max_queue_size) == (32, 5, 256)
    assert settings.queue_timeout_seconds == 30
    assert (settings.device, settings.dtype, settings.trust_remote_code) == ("auto", "auto", False)
    assert settings.model_name == "clip"


def test_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_MODEL, "pvc://models/vit")
    monkeypatch.setenv(contract.ENV_TASK, "image-classification")
    monkeypatch.setenv(contract.ENV_MAX_BATCH_SIZE, "8")
    monkeypatch.setenv(contract.ENV_TRUST_REMOTE_CODE, "true")
    monkeypatch.setenv(contract.ENV_VERSION, "v7")
    monkeypatch.setenv(contract.ENV_AUTH_TOKEN, "s3cret")
    settings = load_settings([])
    assert settings.model == "pvc://models/vit"
    assert settings.max_batch_size == 8
    assert settings.trust_remote_code is True
    assert settings.model_version == "v7"
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_empty_env_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (contract.ENV_NAME, contract.ENV_REVISION, contract.ENV_AUTH_TOKEN):
        monkeypatch.setenv(name, "")
    settings = load_settings(["--model", "/m/vit", "--task", "image-classification"])
    assert (settings.name, settings.revision, settings.auth_token) == (None, None, None)
    assert settings.model_name == "vit"


def test_command_line_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_MAX_DELAY_MS, "50")
    monkeypatch.setenv(contract.ENV_DTYPE, "float16")
    settings = load_settings(
        ["--model", "m", "--task", "image-to-text", "--max-delay-ms", "2", "--no-trust-remote-code"]
    )
    assert settings.max_delay_ms == 2
    assert settings.dtype == "float16"
    assert settings.trust_remote_code is False


def test_backend_and_quantization_are_the_contract_vocabulary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "{eager,onnxruntime,compile}" in build_parser().format_help()
    monkeypatch.setenv(contract.ENV_BACKEND, "onnxruntime")
    settings = load_settings(["--model", "m", "--task", "image-classification"])
    assert settings.backend is contract.Backend.ONNXRUNTIME
    assert settings.quantization is contract.Quantization.NONE
    # Log lines and error messages print the value, never the enum's name.
    assert f"backend {settings.backend}, {settings.quantization}" == "backend onnxruntime, none"
    monkeypatch.delenv(contract.ENV_BACKEND)
    settings = load_settings(["--model", "m", "--task", "image-to-text", "--quantization", "int8"])
    assert (settings.backend, settings.quantization) == ("eager", "int8")


def test_the_auth_token_is_not_a_command_line_option() -> None:
    assert "auth_token" not in cli_fields()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--auth-token", "x"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--model / MMOP_MODEL"),
        (["--model", "m", "--task", "translation"], "invalid choice"),
        (["--model", "m", "--task", "image-to-text", "--max-batch-size", "0"], "max-batch-size"),
        (["--model", "m", "--task", "image-to-text", "--device", "tpu"], "--device / MMOP_DEVICE"),
        (["--model", "m", "--task", "image-to-text", "--name", "a/b"], "--name / MMOP_NAME"),
        (["--model", "m", "--task", "image-to-text", "--port", "x"], "--port / MMOP_PORT"),
    ],
)
def test_bad_values_exit_with_status_2_and_say_which(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_are_frozen() -> None:
    settings = RuntimeSettings(model="m", task="image-classification")
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/mnt/models/clip-vit/", "clip-vit"),
        ("file:///srv/models/vit", "vit"),
        ("pvc://claim/sub/whisper-tiny", "whisper-tiny"),
        ("hf://openai/clip-vit-base-patch32", "clip-vit-base-patch32"),
        ("openai/whisper-tiny", "whisper-tiny"),
        ("/odd/na me+x", "na-me-x"),
    ],
)
def test_default_model_name_is_the_basename(source: str, name: str) -> None:
    assert default_model_name(source) == name
    assert RuntimeSettings(model=source, task="image-to-text", name=None).model_name == name


def test_explicit_name_wins() -> None:
    assert RuntimeSettings(model="/m/x", task="image-to-text", name="y").model_name == "y"


def test_cgroup_cpu_quota(tmp_path: Path) -> None:
    v2 = tmp_path / "cpu.max"
    missing = tmp_path / "missing"
    v2.write_text("250000 100000\n")
    assert cgroup_cpu_quota(v2, missing, missing) == 3
    v2.write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, missing, missing) is None
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("-1")
    period.write_text("100000")
    assert cgroup_cpu_quota(missing, quota, period) is None
    quota.write_text("50000")
    assert cgroup_cpu_quota(missing, quota, period) == 1
    assert cgroup_cpu_quota(missing, missing, missing) is None
    assert available_cpus() >= 1


def test_grpc_port_defaults_to_the_contract_and_0_disables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["--model", "/m/clip", "--task", "image-text-embedding"]
    assert load_settings(base).grpc_port == contract.GRPC_PORT == 8081
    assert load_settings([*base, "--grpc-port", "0"]).grpc_port == 0
    monkeypatch.setenv(contract.ENV_GRPC_PORT, "9001")
    assert load_settings(base).grpc_port == 9001
    with pytest.raises(SystemExit) as exit_info:
        load_settings([*base, "--grpc-port", "70000"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("raw", ["s3cret\n", "  s3cret\r\n", "\ts3cret "])
def test_the_auth_token_is_stripped(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    # A Secret made from a file (kubectl create secret --from-file) ends with a newline.
    monkeypatch.setenv(contract.ENV_AUTH_TOKEN, raw)
    settings = load_settings(["--model", "/m/vit", "--task", "image-classification"])
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "s3cret"


def test_a_whitespace_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_AUTH_TOKEN, "\n")
    settings = load_settings(["--model", "/m/vit", "--task", "image-classification"])
    assert settings.auth_token is None


def test_memory_and_connection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(["--model", "/m/vit", "--task", "image-classification"])
    assert settings.memory_limit_bytes is None
    assert (settings.body_timeout_seconds, settings.max_connections) == (30, 1024)
    monkeypatch.setenv(contract.ENV_MEMORY_LIMIT_BYTES, str(16 * 2**30))
    monkeypatch.setenv(contract.ENV_BODY_TIMEOUT_SECONDS, "5")
    settings = load_settings(["--model", "/m/vit", "--task", "image-classification"])
    assert settings.memory_limit_bytes == 16 * 2**30
    assert settings.body_timeout_seconds == 5


@pytest.mark.parametrize(
    ("setting", "device", "cpus", "expected"),
    [
        (None, "cuda", 8, 7),  # a GPU pod: every CPU but the serving process's decodes
        (None, "cuda", 32, 8),  # capped
        (None, "cuda", 2, 0),  # too few CPUs to gain from processes
        (None, "cpu", 8, 0),  # on a CPU device torch's threads use the cores
        (3, "cpu", 2, 3),  # an explicit count wins
        (0, "cuda", 8, 0),
    ],
)
def test_preprocess_processes_default_to_the_cpus_beside_a_gpu(
    monkeypatch: pytest.MonkeyPatch, setting: int | None, device: str, cpus: int, expected: int
) -> None:
    monkeypatch.setattr("mmop.runtime.settings.available_cpus", lambda: cpus)
    settings = RuntimeSettings(
        model="/m", task="image-classification", preprocess_processes=setting
    )
    assert settings.preprocess_process_count(device) == expected


def test_preprocess_processes_from_env_and_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMOP_PREPROCESS_PROCESSES", "2")
    assert (
        load_settings(["--model", "/m", "--task", "image-classification"]).preprocess_processes == 2
    )
    argv = ["--model", "/m", "--task", "image-classification", "--preprocess-processes", "0"]
    assert load_settings(argv).preprocess_processes == 0
    monkeypatch.setenv("MMOP_PREPROCESS_PROCESSES", "")
    assert load_settings(argv[:4]).preprocess_processes is None
