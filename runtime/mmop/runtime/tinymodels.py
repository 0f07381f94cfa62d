"""Random-weight models for tests, the local dev cluster and benchmarks: nothing is downloaded.

``create_tiny_model(task, directory)`` builds a model for one runtime task from a transformers
config, with a processor and a tokenizer made offline, and saves them the way a hub checkpoint
looks (safetensors weights, ``config.json``, processor and tokenizer files). Builds are seeded,
so the same call always writes the same weights.

    python -m mmop.runtime.tinymodels TASK DIR [--size tiny|small|base] [--family FAMILY] [--seed N]
"""

from __future__ import annotations

import argparse
import importlib
import string
import sys
from pathlib import Path
from typing import Any, Final

from mmop.runtime import contract

SIZES: Final = ("tiny", "small", "base")
# Families per task; the first is the default. Several image-to-text families exist because
# their generate() calls differ (BLIP encoder + text decoder, GIT decoder-only, encoder-decoder).
FAMILIES: Final[dict[str, tuple[str, ...]]] = {
    contract.TASK_IMAGE_TEXT_EMBEDDING: ("clip",),
    contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: ("clip",),
    contract.TASK_IMAGE_TO_TEXT: ("blip", "vision-encoder-decoder", "git"),
    contract.TASK_ASR: ("whisper",),
    contract.TASK_IMAGE_CLASSIFICATION: ("vit",),
}
IMAGE_CLASSIFICATION_LABELS: Final = ("cat", "dog", "bird", "fish", "horse")
SEED: Final = 1234
# Random weights drawn with the usual 0.02 std give the same caption for every image; a wider
# spread makes generated text depend on the input, so tests can tell results apart.
_GENERATIVE_INIT_RANGE: Final = 0.5


def _transformers() -> Any:
    """transformers, untyped: its config classes type their keyword arguments too narrowly for
    the dictionaries of dimensions built here."""
    return importlib.import_module("transformers")


def create_tiny_model(
    task: str,
    directory: Path,
    *,
    size: str = "tiny",
    family: str | None = None,
    seed: int = SEED,
) -> Path:
    """Build a seeded random-weight model for ``task`` and save it into ``directory``.

    ``size="base"`` gives realistic dimensions (CLIP ViT-B/32, ViT-B/16, Whisper base, BLIP
    base) for benchmarks; ``"small"`` (CLIP only) sits between: 224 px input, a 4-layer,
    256-wide ViT/32, whose forward pass costs about what decoding an image does; ``"tiny"``
    builds in well under a second. ``family`` picks the model
    family where a task has several (see ``FAMILIES``). ``seed`` picks the random weights:
    another seed gives the same architecture and processors with other weights, so other
    answers. Returns ``directory``.
    """
    if task not in FAMILIES:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(contract.TASKS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    family = family or FAMILIES[task][0]
    if family not in FAMILIES[task]:
        raise ValueError(
            f"task {task} has no family {family!r}; expected one of {', '.join(FAMILIES[task])}"
        )
    if size == "small" and family != "clip":
        raise ValueError(f"size='small' is offered for the clip family only, not {family}")
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    builder = _BUILDERS[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, components = builder(task, size)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    for component in components:
        component.save_pretrained(directory)
    return directory


# --- tokenizers (built offline from small vocabularies) -------------------------------------------


def _byte_level_vocab() -> dict[str, int]:
    """Every byte of the byte-level alphabet is a token, so any text encodes without merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    return {symbol: index for index, symbol in enumerate(sorted(ByteLevel.alphabet()))}


def _clip_tokenizer() -> Any:
    hf = _transformers()

    alphabet = sorted(_byte_level_vocab())
    vocab: dict[str, int] = {}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:  # CLIP's BPE marks the last symbol of a word with </w>
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return hf.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _wordpiece_tokenizer() -> Any:
    hf = _transformers()

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    symbols = string.ascii_lowercase + string.digits + string.punctuation
    tokens = [*specials, *symbols, *("##" + s for s in symbols)]
    tokens += ["a", "photo", "of", "the", "cat", "dog", "picture"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return hf.BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=64)


_WHISPER_SPECIALS: Final = (
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def _whisper_tokenizer() -> Any:
    hf = _transformers()

    vocab = _byte_level_vocab()
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = hf.WhisperTokenizer(vocab=vocab, merges=[], model_max_length=448)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_WHISPER_SPECIALS)})
    return tokenizer


# --- builders: (task, size) -> (model, [processor parts to save]) --------------------------------


def _clip(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    tokenizer = _clip_tokenizer()
    token_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if size == "base":  # openai/clip-vit-base-patch32
        text = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048}
        text |= {"num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77}
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
        vision |= {"num_attention_heads": 12, "image_size": 224, "patch_size": 32}
        projection_dim, image_size = 512, 224
    elif size == "small":  # a ViT/32 at a quarter of base's width and a third of its depth
        text = {"vocab_size": len(tokenizer), "hidden_size": 256, "intermediate_size": 1024}
        text |= {"num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 77}
        vision = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4}
        vision |= {"num_attention_heads": 4, "image_size": 224, "patch_size": 32}
        projection_dim, image_size = 256, 224
    else:
        text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64}
        text |= {"num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77}
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        vision |= {"num_attention_heads": 4, "image_size": 32, "patch_size": 8}
        projection_dim, image_size = 16, 32
    config = hf.CLIPConfig(
        text_config=text | token_ids, vision_config=vision, projection_dim=projection_dim
    )
    image_processor = hf.CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = hf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return hf.CLIPModel(config), [processor]


def _blip(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    tokenizer = _wordpiece_tokenizer()
    token_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    text: dict[str, Any]
    vision: dict[str, Any]
    init: dict[str, Any]
    if size == "base":  # Salesforce/blip-image-captioning-base
        text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
        text |= {"num_attention_heads": 12, "encoder_hidden_size": 768}
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
        vision |= {"num_attention_heads": 12, "image_size": 384, "patch_size": 16}
        image_size, init = 384, {}
    else:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        text |= {"num_attention_heads": 4, "encoder_hidden_size": 32}
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        vision |= {"num_attention_heads": 4, "image_size": 32, "patch_size": 8}
        image_size, init = 32, {"initializer_range": _GENERATIVE_INIT_RANGE}
    text |= {"vocab_size": len(tokenizer), "max_position_embeddings": 64} | token_ids | init
    vision |= init
    config = hf.BlipConfig(text_config=text, vision_config=vision, projection_dim=32, **init)
    image_processor = hf.BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = hf.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return hf.BlipForConditionalGeneration(config), [processor]


def _git(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    if size == "base":
        raise ValueError("size='base' is not offered for the git family; use blip")
    tokenizer = _wordpiece_tokenizer()
    init: dict[str, Any] = {"initializer_range": _GENERATIVE_INIT_RANGE}
    vision: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    vision |= {"num_attention_heads": 4, "image_size": 32, "patch_size": 8} | init
    config = hf.GitConfig(
        vision_config=vision,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **init,
    )
    image_processor = hf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = hf.GitProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return hf.GitForCausalLM(config), [processor]


def _vision_encoder_decoder(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    if size == "base":
        raise ValueError("size='base' is not offered for the vision-encoder-decoder family")
    tokenizer = _wordpiece_tokenizer()
    init = {"initializer_range": _GENERATIVE_INIT_RANGE}
    encoder = hf.ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        **init,
    )
    decoder = hf.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        is_decoder=True,
        add_cross_attention=True,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **init,
    )
    config = hf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.eos_token_id = tokenizer.sep_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = hf.VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = hf.ViTImageProcessorPil(size={"height": 32, "width": 32})
    return model, [image_processor, tokenizer]


def _whisper(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    tokenizer = _whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _WHISPER_SPECIALS}
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    dims: dict[str, Any]
    if size == "base":  # openai/whisper-base (its own 51865-token vocabulary is not built here)
        dims = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6}
        dims |= {"encoder_attention_heads": 8, "decoder_attention_heads": 8}
        dims |= {"encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048}
    else:
        dims = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2}
        dims |= {"encoder_attention_heads": 4, "decoder_attention_heads": 4}
        dims |= {"encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
        dims |= {"init_std": _GENERATIVE_INIT_RANGE}
    config = hf.WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        **dims,
    )
    model = hf.WhisperForConditionalGeneration(config)
    model.generation_config = hf.GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
        begin_suppress_tokens=[end],
        suppress_tokens=[],
    )
    feature_extractor = hf.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    processor = hf.WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model, [processor]


def _vit(task: str, size: str) -> tuple[Any, list[Any]]:
    hf = _transformers()

    labels = dict(enumerate(IMAGE_CLASSIFICATION_LABELS))
    if size == "base":  # google/vit-base-patch16-224
        dims = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
        dims |= {"num_attention_heads": 12, "image_size": 224, "patch_size": 16}
    else:
        dims = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        dims |= {"num_attention_heads": 4, "image_size": 32, "patch_size": 8}
    config = hf.ViTConfig(id2label=labels, label2id={v: k for k, v in labels.items()}, **dims)
    side = dims["image_size"]
    image_processor = hf.ViTImageProcessorPil(size={"height": side, "width": side})
    return hf.ViTForImageClassification(config), [image_processor]


_BUILDERS: Final = {
    "clip": _clip,
    "blip": _blip,
    "git": _git,
    "vision-encoder-decoder": _vision_encoder_decoder,
    "whisper": _whisper,
    "vit": _vit,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmop.runtime.tinymodels",
        description="Build a seeded random-weight model for one mmop-runtime task.",
    )
    parser.add_argument("task", choices=contract.TASKS)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--family", default=None, help="model family where a task has several")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the random weights")
    args = parser.parse_args(argv)
    try:
        path = create_tiny_model(
            args.task, args.directory, size=args.size, family=args.family, seed=args.seed
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
