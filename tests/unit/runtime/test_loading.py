"""Model sources and the safetensors-only rule, checked without loading a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmop.runtime import contract
from mmop.runtime.errors import LoadError
from mmop.runtime.loading import check_local_weights, resolve_source, select_device, select_dtypes

PVC_ROOT = Path(contract.PVC_MOUNT_ROOT)


class TestResolveSource:
    def test_local_directory(self, tmp_path: Path) -> None:
        source = resolve_source(str(tmp_path), pvc_root=PVC_ROOT)
        assert (source.kind, source.location) == ("local", str(tmp_path))

    def test_file_url(self) -> None:
        source = resolve_source("file:///srv/models/vit", pvc_root=PVC_ROOT)
        assert (source.kind, source.location) == ("local", "/srv/models/vit")

    def test_file_url_must_be_absolute(self) -> None:
        with pytest.raises(LoadError, match="absolute path"):
            resolve_source("file://models/vit", pvc_root=PVC_ROOT)

    def test_pvc_is_the_mounted_claim(self) -> None:
        source = resolve_source("pvc://my-claim/sub/path", pvc_root=PVC_ROOT)
        assert source.location == "/mnt/models/my-claim/sub/path"
        assert resolve_source("pvc://c", pvc_root=Path("/x")).location == "/x/c"

    @pytest.mark.parametrize("source", ["pvc://Bad_Claim/x", "pvc://claim/../etc", "pvc:///x"])
    def test_pvc_refuses_escapes_and_bad_claims(self, source: str) -> None:
        with pytest.raises(LoadError, match="claim"):
            resolve_source(source, pvc_root=PVC_ROOT)

    @pytest.mark.parametrize(
        "text", ["hf://openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32"]
    )
    def test_hub_ids(self, text: str) -> None:
        source = resolve_source(text, pvc_root=PVC_ROOT, revision="abc123")
        assert (source.kind, source.location, source.revision) == (
            "hub",
            "openai/clip-vit-base-patch32",
            "abc123",
        )

    def test_unsupported_scheme(self) -> None:
        with pytest.raises(LoadError, match="s3:// scheme is not supported"):
            resolve_source("s3://bucket/model", pvc_root=PVC_ROOT)

    def test_neither_directory_nor_hub_id(self) -> None:
        with pytest.raises(LoadError, match="neither an existing directory nor a hub id"):
            resolve_source("a/b/c", pvc_root=PVC_ROOT)


class TestLocalWeights:
    def test_safetensors_pass(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(b"x")
        (tmp_path / "pytorch_model.bin").write_bytes(b"x")  # beside safetensors: ignored
        check_local_weights(tmp_path)

    def test_pickle_only_is_refused_naming_safetensors(self, tmp_path: Path) -> None:
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "pytorch_model.bin").write_bytes(b"x")
        with pytest.raises(
            LoadError, match=r"pickle checkpoint \(pytorch_model.bin\).*safetensors"
        ):
            check_local_weights(tmp_path)

    def test_no_weights(self, tmp_path: Path) -> None:
        with pytest.raises(LoadError, match=r"no model weights \(\*.safetensors"):
            check_local_weights(tmp_path)

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(LoadError, match="does not exist"):
            check_local_weights(tmp_path / "nope")


class TestDeviceAndDtype:
    def test_auto_on_cpu_is_fp32_without_autocast(self) -> None:
        import torch

        device = select_device("cpu")
        assert select_dtypes("auto", device) == (torch.float32, None)
        assert select_dtypes("bfloat16", device) == (torch.bfloat16, None)

    def test_cuda_without_cuda_is_a_load_error(self) -> None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        with pytest.raises(LoadError, match="CUDA is not available"):
            select_device("cuda")
        assert select_device("auto").type == "cpu"
