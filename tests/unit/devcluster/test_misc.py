"""The small parts of mmop.devcluster: progress lines, the demo, the routing CRDs, the CLI's
options and the loopback address pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmop.devcluster import demo, progress
from mmop.devcluster.kubelet.ipam import LoopbackPool, PoolExhaustedError, UnsafeLockDirError
from mmop.devcluster.router import meshcrds
from mmop.operator import cli as operator_cli
from mmop.operator import kube, models


class TestProgress:
    def test_summary_line(self) -> None:
        obj = {
            "metadata": {"name": "clip", "namespace": "ml"},
            "status": {
                "phase": "Progressing",
                "stableVersion": "v1",
                "canaryVersion": "v2",
                "canaryWeight": 25,
                "readyReplicas": 3,
                "replicas": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "StableServing"}],
            },
        }
        assert progress.summarize(obj).line() == (
            "ml/clip: phase=Progressing ready=True stable=v1 canary=v2 weight=25% replicas=3/3"
        )

    def test_new_model_and_reason_when_not_ready(self) -> None:
        obj = {
            "metadata": {"name": "clip", "namespace": "ml"},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec"}]
            },
        }
        line = progress.summarize(obj).line()
        assert line == "ml/clip: phase=- ready=False (InvalidSpec) stable=- replicas=0/0"

    def test_equal_states_compare_equal(self) -> None:
        obj = {"metadata": {"name": "a", "namespace": "b"}}
        assert progress.summarize(obj) == progress.summarize(obj)


class TestDemo:
    def test_manifest_is_a_valid_model(self, tmp_path: Path) -> None:
        manifest = demo.manifest(tmp_path / "clip-tiny")
        mm = models.parse_model(manifest)
        assert mm.spec.resources.gpu == 0
        assert mm.spec.traffic.router == models.Router.ISTIO
        assert mm.spec.model.source == f"file://{(tmp_path / 'clip-tiny').resolve()}"

    def test_request_and_curl(self, tmp_path: Path) -> None:
        path = demo.write_request(tmp_path)
        body = json.loads(path.read_text())
        assert [i["name"] for i in body["inputs"]] == ["image", "labels"]
        command = demo.curl_command("http://127.0.0.1:8000", path)
        assert command.startswith("curl -s http://127.0.0.1:8000/v2/models/clip-demo/infer")
        assert f"-d @{path}" in command


def test_routing_crds_serve_the_kinds_the_router_reads() -> None:
    served = {
        (c["spec"]["group"], c["spec"]["versions"][0]["name"], c["spec"]["names"]["plural"])
        for c in meshcrds.routing_crds()
    }
    for kind in (kube.VIRTUAL_SERVICE, kube.DESTINATION_RULE, kube.HTTP_ROUTE):
        assert (kind.group, kind.version, kind.plural) in served
    for crd in meshcrds.routing_crds():
        names = crd["spec"]["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema["x-kubernetes-preserve-unknown-fields"] is True


class TestCliOptions:
    def test_defaults(self) -> None:
        args = operator_cli.build_parser().parse_args(["dev"])
        assert (args.port, args.router_port, args.gpus, args.no_operator, args.demo) == (
            0,
            8000,
            0,
            False,
            False,
        )
        assert args.state_dir == ".mmop-dev"
        assert args.filename == []

    def test_all_options(self) -> None:
        args = operator_cli.build_parser().parse_args(
            [
                "dev",
                "-f",
                "a.yaml",
                "-f",
                "b.yaml",
                "--demo",
                "--port",
                "6443",
                "--router-port",
                "0",
                "--gpus",
                "2",
                "--no-operator",
                "--state-dir",
                "/tmp/x",
            ]
        )
        assert args.filename == ["a.yaml", "b.yaml"]
        assert (args.port, args.router_port, args.gpus, args.no_operator, args.demo) == (
            6443,
            0,
            2,
            True,
            True,
        )


class TestLoopbackPool:
    def test_lowest_first_and_recycled(self, tmp_path: Path) -> None:
        pool = LoopbackPool(lock_dir=tmp_path / "ips")
        first, second = pool.allocate(), pool.allocate()
        assert (first, second) == ("127.0.0.2", "127.0.0.3")
        pool.release(first)
        assert pool.allocate() == "127.0.0.2"
        pool.release_all()

    def test_two_pools_never_share_an_address(self, tmp_path: Path) -> None:
        locks = tmp_path / "ips"
        one, two = LoopbackPool(lock_dir=locks), LoopbackPool(lock_dir=locks)
        assert one.allocate() == "127.0.0.2"
        assert two.allocate() == "127.0.0.3"
        one.release_all()
        assert two.allocate() == "127.0.0.2"
        two.release_all()

    def test_exhaustion(self, tmp_path: Path) -> None:
        pool = LoopbackPool(lock_dir=tmp_path / "ips", first=2, last=2)
        pool.allocate()
        with pytest.raises(PoolExhaustedError):
            pool.allocate()
        pool.release_all()

    def test_the_lock_dir_is_private_and_created_so(self, tmp_path: Path) -> None:
        pool = LoopbackPool(lock_dir=tmp_path / "ips")
        pool.allocate()
        assert (tmp_path / "ips").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "ips" / "127.0.0.2.lock").stat().st_mode & 0o077 == 0
        pool.release_all()

    @pytest.mark.parametrize("mode", [0o755, 0o777, 0o1777])
    def test_our_lock_dir_open_to_others_is_closed(self, tmp_path: Path, mode: int) -> None:
        shared = tmp_path / "ips"
        shared.mkdir()
        shared.chmod(mode)
        pool = LoopbackPool(lock_dir=shared)
        pool.allocate()
        assert shared.stat().st_mode & 0o7777 == 0o700
        pool.release_all()

    def test_a_linked_lock_dir_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        (tmp_path / "ips").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(UnsafeLockDirError, match="not a directory"):
            LoopbackPool(lock_dir=tmp_path / "ips").allocate()

    def test_a_planted_link_is_not_followed_and_its_target_not_truncated(
        self, tmp_path: Path
    ) -> None:
        """Another user's planted link (here: in a dir we own, as after a race) to a file of
        ours: opening the lock must fail, and the file must keep its content."""
        locks = tmp_path / "ips"
        locks.mkdir(mode=0o700)
        victim = tmp_path / "precious"
        victim.write_bytes(b"keep me")
        (locks / "127.0.0.2.lock").symlink_to(victim)
        pool = LoopbackPool(lock_dir=locks, first=2, last=2)
        with pytest.raises(OSError):
            pool.allocate()
        assert victim.read_bytes() == b"keep me"
        # a plain lock file is reused, not truncated (its content is not ours to clear)
        (locks / "127.0.0.2.lock").unlink()
        (locks / "127.0.0.2.lock").write_bytes(b"x")
        assert pool.allocate() == "127.0.0.2"
        assert (locks / "127.0.0.2.lock").read_bytes() == b"x"
        pool.release_all()
