"""devcluster/kubelet/podenv.py: env with valueFrom, $(VAR) expansion, path remapping, MMOP_HOST."""

from __future__ import annotations

import pytest

from mmop.devcluster.kubelet import podenv

POD = {
    "metadata": {
        "name": "clip-v1-abc-xyz",
        "namespace": "ml",
        "uid": "u-1",
        "labels": {"app": "clip"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "mmop-dev"},
    "status": {"podIP": "127.0.0.7", "hostIP": "127.0.0.1"},
}
SOURCES = podenv.EnvSources(
    secrets={"auth": {"token": "s3cret"}, "gone": None},
    config_maps={"settings": {"LEVEL": "debug", "bad key": "x"}},
)
ALLOCATABLE = {"cpu": "1000", "memory": "4Ti"}


def _env(*items: dict[str, object], env_from: list[dict[str, object]] | None = None) -> dict:
    container = {
        "name": "runtime",
        "env": list(items),
        "envFrom": env_from or [],
        "resources": {"limits": {"memory": "2Gi"}},
    }
    return podenv.kubernetes_env(container, pod=POD, sources=SOURCES, allocatable=ALLOCATABLE)


class TestKubernetesEnv:
    def test_plain_values_and_expansion(self) -> None:
        env = _env(
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
        )
        assert env == {"A": "x", "B": "x-$(MISSING)-$(A)"}

    def test_field_refs(self) -> None:
        env = _env(
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        )
        assert env == {
            "POD": "clip-v1-abc-xyz",
            "NS": "ml",
            "IP": "127.0.0.7",
            "NODE": "mmop-dev",
            "APP": "clip",
        }

    def test_secret_and_config_map_keys(self) -> None:
        env = _env(
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "token"}}},
            {
                "name": "LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}},
            },
        )
        assert env == {"TOKEN": "s3cret", "LEVEL": "debug"}

    def test_resource_field_ref_uses_the_divisor(self) -> None:
        env = _env(
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            }
        )
        assert env == {"MEM": "2048"}

    def test_missing_secret_is_a_config_error(self) -> None:
        with pytest.raises(podenv.EnvError, match='secret "gone" not found'):
            _env({"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "t"}}})

    def test_missing_key_is_a_config_error(self) -> None:
        with pytest.raises(podenv.EnvError, match="couldn't find key nope in Secret ml/auth"):
            _env({"name": "T", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "nope"}}})

    def test_optional_reference_may_be_missing(self) -> None:
        env = _env(
            {
                "name": "T",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "t", "optional": True}},
            }
        )
        assert env == {}

    def test_env_from_with_prefix_skips_invalid_names(self) -> None:
        env = _env(
            {"name": "LEVEL", "value": "info"},
            env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        )
        assert env == {"CFG_LEVEL": "debug", "LEVEL": "info"}

    def test_referenced_objects(self) -> None:
        container = {
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "t"}}}],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
        }
        assert podenv.referenced_objects(container) == ({"auth"}, {"settings"})


class TestRemapPaths:
    mounts = {"/var/cache/mmop": "/state/pods/p/volumes/model-cache", "/tmp": "/state/tmp"}

    def test_mount_path_and_paths_below_it(self) -> None:
        env = {
            "MMOP_CACHE_DIR": "/var/cache/mmop",
            "HF_HOME": "/var/cache/mmop/hf",
            "OTHER": "/var/cache/mmopx",
            "PLAIN": "hello",
        }
        remapped = podenv.remap_paths(env, self.mounts, exists=lambda _: False)
        assert remapped == {
            "MMOP_CACHE_DIR": "/state/pods/p/volumes/model-cache",
            "HF_HOME": "/state/pods/p/volumes/model-cache/hf",
            "OTHER": "/var/cache/mmopx",
            "PLAIN": "hello",
        }

    def test_longest_mount_wins(self) -> None:
        mounts = {"/data": "/a", "/data/models": "/b"}
        remapped = podenv.remap_paths({"M": "/data/models/x"}, mounts, exists=lambda _: False)
        assert remapped == {"M": "/b/x"}

    def test_existing_local_paths_stay(self) -> None:
        env = {"MMOP_MODEL": "/tmp/models/clip", "SCRATCH": "/tmp/scratch"}
        remapped = podenv.remap_paths(env, self.mounts, exists=lambda p: p == "/tmp/models/clip")
        assert remapped == {"MMOP_MODEL": "/tmp/models/clip", "SCRATCH": "/state/tmp/scratch"}


def test_process_env_forces_host_and_follows_tmp() -> None:
    container = {
        "env": [
            {"name": "MMOP_HOST", "value": "0.0.0.0"},
            {"name": "HF_HOME", "value": "/var/cache/mmop/hf"},
        ]
    }
    env = podenv.process_env(
        container,
        pod=POD,
        sources=SOURCES,
        pod_ip="127.0.0.9",
        mounts={"/var/cache/mmop": "/local/cache", "/tmp": "/local/tmp"},
        allocatable=ALLOCATABLE,
        base={"PATH": "/usr/bin", "MMOP_MODEL": "leaked", "KUBECONFIG": "/k"},
    )
    assert env["MMOP_HOST"] == "127.0.0.9"
    assert env["HF_HOME"] == "/local/cache/hf"
    assert env["TMPDIR"] == "/local/tmp"
    assert env["PATH"] == "/usr/bin"
    assert "MMOP_MODEL" not in env
    assert "KUBECONFIG" not in env


def test_process_env_sends_plain_http_through_the_router() -> None:
    def env_of(container_env: list[dict[str, str]], base: dict[str, str]) -> dict[str, str]:
        return podenv.process_env(
            {"env": container_env},
            pod=POD,
            sources=SOURCES,
            pod_ip="127.0.0.9",
            mounts={},
            allocatable=ALLOCATABLE,
            base=base,
            cluster_proxy="http://127.0.0.1:8000",
        )

    env = env_of([], {"HTTP_PROXY": "http://corporate:3128", "HTTPS_PROXY": "http://corp:3128"})
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:8000"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    assert env["HTTPS_PROXY"] == "http://corp:3128"  # HTTPS (model downloads) is left alone
    own = env_of([{"name": "HTTP_PROXY", "value": "http://mine:1"}], {})
    assert own["HTTP_PROXY"] == own["http_proxy"] == "http://mine:1"  # the container's wins
    assert own["NO_PROXY"] == "localhost,127.0.0.1,::1"
    plain = podenv.process_env(
        {}, pod=POD, sources=SOURCES, pod_ip="127.0.0.9", mounts={}, allocatable=ALLOCATABLE
    )
    assert "HTTP_PROXY" not in plain


def test_decode_secret() -> None:
    assert podenv.decode_secret({"token": "czNjcmV0"}) == {"token": "s3cret"}


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PATH", "BASH_ENV"]
)
def test_a_pod_cannot_set_what_makes_the_local_process_run_other_code(name: str) -> None:
    container = {"env": [{"name": name, "value": "/tmp/evil"}]}
    with pytest.raises(podenv.EnvError, match=name):
        podenv.process_env(
            container,
            pod=POD,
            sources=SOURCES,
            pod_ip="127.0.0.9",
            mounts={},
            allocatable=ALLOCATABLE,
            base={"PATH": "/usr/bin", "PYTHONPATH": "/session/src"},
        )


def test_the_session_keeps_path_and_pythonpath_and_pods_keep_harmless_python_settings() -> None:
    container = {"env": [{"name": "PYTHONUNBUFFERED", "value": "0"}]}
    env = podenv.process_env(
        container,
        pod=POD,
        sources=SOURCES,
        pod_ip="127.0.0.9",
        mounts={},
        allocatable=ALLOCATABLE,
        base={"PATH": "/usr/bin", "PYTHONPATH": "/session/src", "HOME": "/home/dev"},
    )
    assert (env["PATH"], env["PYTHONPATH"], env["HOME"]) == (
        "/usr/bin",
        "/session/src",
        "/home/dev",
    )
    assert env["PYTHONUNBUFFERED"] == "0"
