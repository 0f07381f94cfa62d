"""The work every server does for one image, written plainly: the limit and the peers run this.

base64 -> PIL decode -> the model's own image processor -> stack -> ``get_image_features`` ->
L2-normalised float32 rows. It is deliberately independent of the runtime's code (only the
dtype policy is shared), so tuning the runtime never moves the limit it is measured against.
"""

from __future__ import annotations

import base64
import importlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatRows = npt.NDArray[np.float32]


def set_torch_threads(threads: int | None) -> int:
    """Size torch's intra-op pool (the servers get the same number through OMP_NUM_THREADS)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


class ClipImagePipeline:
    """A CLIP-family model and its image processor on one device, as the runtime loads them."""

    def __init__(self, model_dir: Path, *, device: str = "cpu", dtype: str = "auto") -> None:
        import torch

        from mmop.runtime.loading import select_device, select_dtypes

        # untyped: transformers types its loaders' keyword arguments too narrowly
        transformers: Any = importlib.import_module("transformers")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.device = select_device(device)
        self.weight_dtype, self.autocast_dtype = select_dtypes(dtype, self.device)
        model = transformers.AutoModel.from_pretrained(
            str(model_dir), use_safetensors=True, dtype=self.weight_dtype
        )
        self.model: Any = model.eval().to(self.device)
        self.processor: Any = transformers.AutoImageProcessor.from_pretrained(str(model_dir))
        self._torch = torch

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return str(self._torch.cuda.get_device_name(self.device))
        return "cpu"

    # --- per image (what a server does per request) -------------------------------------------

    def decode_file(self, data: bytes) -> Any:
        """PNG/JPEG bytes -> the processor's pixel tensor (C, H, W)."""
        image = Image.open(io.BytesIO(data))
        rgb = image.convert("RGB")
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"][0]

    def decode_base64(self, text: str) -> Any:
        return self.decode_file(base64.b64decode(text))

    # --- per batch (one forward pass) ---------------------------------------------------------

    def forward(self, pixels: list[Any]) -> FloatRows:
        """A batch of pixel tensors -> normalised image embeddings, one row each."""
        torch = self._torch
        batch = torch.stack(pixels)
        return self.forward_tensor(batch)

    def forward_tensor(self, batch: Any) -> FloatRows:
        torch = self._torch
        dtype = self.weight_dtype if self.autocast_dtype is None else torch.float32
        batch = batch.to(self.device, dtype=dtype, non_blocking=True)
        with torch.inference_mode():
            if self.autocast_dtype is None:
                features = self.model.get_image_features(pixel_values=batch)
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    features = self.model.get_image_features(pixel_values=batch)
            features = getattr(features, "pooler_output", features)
            normalized = torch.nn.functional.normalize(features.float(), dim=-1)
            rows: FloatRows = normalized.cpu().numpy()
        return rows

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)


def pipeline_from_env() -> ClipImagePipeline:
    """The peers read their model from ``BENCH_MODEL`` / ``BENCH_DEVICE`` / ``BENCH_DTYPE``."""
    set_torch_threads(int(os.environ.get("BENCH_TORCH_THREADS", "0")) or None)
    return ClipImagePipeline(
        Path(os.environ["BENCH_MODEL"]),
        device=os.environ.get("BENCH_DEVICE", "cpu"),
        dtype=os.environ.get("BENCH_DTYPE", "auto"),
    )
