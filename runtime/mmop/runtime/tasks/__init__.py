"""The runtime's tasks, one module per family; this registry imports none of them eagerly.

``signature(task)`` is static (no torch), so metadata and request checks work while the model
loads; ``create_task`` imports the family's module and builds it around a loaded model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from mmop.runtime import contract
from mmop.runtime.tasks.base import Signature, TensorSpec

if TYPE_CHECKING:
    from mmop.runtime.loading import LoadedModel
    from mmop.runtime.settings import RuntimeSettings
    from mmop.runtime.tasks.base import Task

# task -> "module:class"
_IMPLEMENTATIONS: Final = {
    contract.TASK_IMAGE_TEXT_EMBEDDING: "mmop.runtime.tasks.clip:EmbeddingTask",
    contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: "mmop.runtime.tasks.clip:ZeroShotTask",
    contract.TASK_IMAGE_TO_TEXT: "mmop.runtime.tasks.captioning:CaptioningTask",
    contract.TASK_ASR: "mmop.runtime.tasks.speech:SpeechRecognitionTask",
    contract.TASK_IMAGE_CLASSIFICATION: "mmop.runtime.tasks.classification:ImageClassificationTask",
}

_BYTES_ANY: Final = (-1,)
_SIGNATURES: Final = {
    contract.TASK_IMAGE_TEXT_EMBEDDING: Signature(
        inputs=(
            TensorSpec("image", "BYTES", _BYTES_ANY, optional=True),
            TensorSpec("text", "BYTES", _BYTES_ANY, optional=True),
        ),
        outputs=(
            TensorSpec("image_embeds", "FP32", (-1, -1)),
            TensorSpec("text_embeds", "FP32", (-1, -1)),
        ),
        parameters=("normalize",),
    ),
    contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: Signature(
        inputs=(
            TensorSpec("image", "BYTES", _BYTES_ANY),
            TensorSpec("labels", "BYTES", _BYTES_ANY),
        ),
        outputs=(TensorSpec("scores", "FP32", (-1, -1)), TensorSpec("label", "BYTES", _BYTES_ANY)),
        parameters=("hypothesis_template",),
    ),
    contract.TASK_IMAGE_TO_TEXT: Signature(
        inputs=(
            TensorSpec("image", "BYTES", _BYTES_ANY),
            TensorSpec("prompt", "BYTES", _BYTES_ANY, optional=True),
        ),
        outputs=(TensorSpec("text", "BYTES", _BYTES_ANY),),
        parameters=("max_new_tokens",),
    ),
    contract.TASK_ASR: Signature(
        inputs=(TensorSpec("audio", "BYTES", _BYTES_ANY),),
        outputs=(TensorSpec("text", "BYTES", _BYTES_ANY),),
        parameters=("max_new_tokens", "language", "task"),
    ),
    contract.TASK_IMAGE_CLASSIFICATION: Signature(
        inputs=(TensorSpec("image", "BYTES", _BYTES_ANY),),
        outputs=(TensorSpec("scores", "FP32", (-1, -1)), TensorSpec("label", "BYTES", _BYTES_ANY)),
    ),
}


def signature(task: str) -> Signature:
    """Inputs, outputs and parameters of ``task``, without importing torch."""
    try:
        return _SIGNATURES[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; expected one of {', '.join(contract.TASKS)}"
        ) from None


def create_task(task: str, loaded: LoadedModel, settings: RuntimeSettings) -> Task:
    module_name, _, class_name = _IMPLEMENTATIONS[task].partition(":")
    implementation = getattr(importlib.import_module(module_name), class_name)
    created: Task = implementation(loaded, settings)
    created.bind_backend()
    return created
