"""Tiny random-weight models: every task builds offline, deterministically, loadably."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmop.runtime import contract
from mmop.runtime.tinymodels import FAMILIES, create_tiny_model, main


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("task", "family"),
    [(task, family) for task, families in FAMILIES.items() for family in families],
)
def test_every_family_builds_with_safetensors_and_processor_files(
    task: str, family: str, tmp_path: Path
) -> None:
    directory = create_tiny_model(task, tmp_path / "m", family=family)
    names = {path.name for path in directory.iterdir()}
    assert "model.safetensors" in names
    assert "config.json" in names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    assert names & {"processor_config.json", "preprocessor_config.json"}


def test_builds_are_deterministic(tmp_path: Path) -> None:
    first = create_tiny_model(contract.TASK_IMAGE_CLASSIFICATION, tmp_path / "a")
    second = create_tiny_model(contract.TASK_IMAGE_CLASSIFICATION, tmp_path / "b")
    assert _digest(first) == _digest(second)


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    task = contract.TASK_IMAGE_CLASSIFICATION
    default = create_tiny_model(task, tmp_path / "a")
    other = create_tiny_model(task, tmp_path / "b", seed=7)
    again = create_tiny_model(task, tmp_path / "c", seed=7)
    assert _digest(other) != _digest(default)
    assert _digest(other) == _digest(again)
    assert (other / "config.json").read_text() == (default / "config.json").read_text()


def test_base_size_is_clip_vit_b32(tmp_path: Path) -> None:
    # Only the config is checked here; building 150M parameters belongs to benchmarks.
    import torch

    from mmop.runtime import tinymodels

    with torch.device("meta"):
        model, _ = tinymodels._clip(contract.TASK_IMAGE_TEXT_EMBEDDING, "base")
    config = model.config
    assert (config.vision_config.hidden_size, config.vision_config.patch_size) == (768, 32)
    assert (config.text_config.hidden_size, config.projection_dim) == (512, 512)
    assert config.vision_config.num_hidden_layers == 12


def test_small_size_is_a_narrow_clip_at_224_pixels(tmp_path: Path) -> None:
    import torch

    from mmop.runtime import tinymodels

    with torch.device("meta"):
        model, parts = tinymodels._clip(contract.TASK_IMAGE_TEXT_EMBEDDING, "small")
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (256, 4, 224)
    assert parts[0].image_processor.crop_size == {"height": 224, "width": 224}
    with pytest.raises(ValueError, match="clip family only"):
        create_tiny_model(contract.TASK_IMAGE_TO_TEXT, tmp_path, size="small")


def test_unknown_task_size_and_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        create_tiny_model("translation", tmp_path)
    with pytest.raises(ValueError, match="unknown size"):
        create_tiny_model(contract.TASK_ASR, tmp_path, size="huge")
    with pytest.raises(ValueError, match="no family"):
        create_tiny_model(contract.TASK_ASR, tmp_path, family="blip")


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([contract.TASK_IMAGE_TO_TEXT, str(tmp_path / "git"), "--family", "git"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "git")
    config = json.loads((tmp_path / "git" / "config.json").read_text())
    assert config["model_type"] == "git"
