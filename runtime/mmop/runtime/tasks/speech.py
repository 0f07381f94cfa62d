"""``automatic-speech-recognition`` with Whisper (any speech seq2seq model with input features).

Audio is decoded with soundfile (WAV/FLAC, no ffmpeg), mixed to mono and resampled to the
feature extractor's rate in the decoding pool; log-mel features are computed there too, so the
worker thread only runs ``generate``. Samples with the same language, task and token budget
run together.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

from mmop.runtime import contract, media
from mmop.runtime.errors import InvalidInput, LoadError
from mmop.runtime.loading import LoadedModel
from mmop.runtime.protocol import InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks import signature as signature_of
from mmop.runtime.tasks.base import (
    Prepared,
    Sample,
    Task,
    binary_value,
    bytes_input,
    int_parameter,
    run_grouped,
    str_parameter,
)


class SpeechRecognitionTask(Task):
    name = contract.TASK_ASR
    signature = signature_of(contract.TASK_ASR)

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        super().__init__(loaded, settings)
        extractor = loaded.feature_extractor
        if extractor is None or loaded.tokenizer is None:
            raise LoadError("speech recognition needs a feature extractor and a tokenizer")
        self.extractor = extractor
        self.tokenizer = loaded.tokenizer
        self.sampling_rate = int(extractor.sampling_rate)
        window = getattr(extractor, "chunk_length", None)
        # Whisper hears 30 s windows; longer audio would be cut silently, so refuse it instead.
        self.max_seconds = min(
            settings.max_audio_seconds, float(window or settings.max_audio_seconds)
        )
        generation = loaded.model.generation_config
        self.languages: dict[str, str] = {
            token.strip("<|>"): token for token in (getattr(generation, "lang_to_id", None) or {})
        }
        self.tasks = tuple(getattr(generation, "task_to_id", None) or ())
        positions = int(getattr(loaded.config, "max_target_positions", 448))
        self.max_tokens = max(1, min(settings.max_new_tokens, positions - 5))

    def preprocess(self, request: InferRequest) -> Prepared:
        clips = bytes_input(request, "audio")
        assert clips is not None
        parameters = request.parameters
        budget = int_parameter(
            parameters, "max_new_tokens", default=self.max_tokens, low=1, high=self.max_tokens
        )
        language = str_parameter(parameters, "language", default=None, max_chars=32)
        if language is not None:
            code = language.strip("<|>").lower()
            if code not in self.languages:
                known = ", ".join(sorted(self.languages)) or "none (the model is not multilingual)"
                raise InvalidInput(
                    f"parameter 'language' {language!r} is not known; known: {known}"
                )
            language = code
        task = str_parameter(parameters, "task", default=None, max_chars=32)
        if task is not None and task not in self.tasks:
            raise InvalidInput(
                f"parameter 'task' must be one of {', '.join(self.tasks) or '(none)'}"
            )
        samples = []
        for index, value in enumerate(clips):
            what = f"audio[{index}]"
            samples.append(
                Sample(
                    "audio",
                    self._features(binary_value(value, what=what), what),
                    (language, task, budget),
                )
            )
        return Prepared(samples)

    def _features(self, data: bytes, what: str) -> dict[str, Any]:
        audio = media.decode_audio(
            data, what=what, sampling_rate=self.sampling_rate, max_seconds=self.max_seconds
        )
        features = self.extractor(
            audio,
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
        )
        return {key: value[0] for key, value in features.items()}

    def forward(self, samples: list[Sample]) -> list[Any]:
        return run_grouped(samples, self._generate)

    def _generate(self, samples: list[Sample], group: Hashable) -> list[str]:
        import torch

        language, task, budget = cast(tuple[str | None, str | None, int], group)
        loaded = self.loaded
        dtype = loaded.weight_dtype if loaded.autocast_dtype is None else torch.float32
        batch = {
            key: torch.stack([sample.data[key] for sample in samples]).to(loaded.device)
            for key in samples[0].data
        }
        batch["input_features"] = batch["input_features"].to(dtype)
        kwargs: dict[str, Any] = {"max_new_tokens": budget}
        if language is not None:
            kwargs["language"] = language
        if task is not None:
            kwargs["task"] = task
        output = loaded.model.generate(**batch, **kwargs)
        sequences = getattr(output, "sequences", output)
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        texts = [str(text) for text in results]
        return [OutputTensor("text", "BYTES", (len(texts),), texts)]
