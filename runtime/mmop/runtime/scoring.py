"""Output-equivalence scores of a canary's answers against stable's, one metric per task family.

Standard library only: the operator imports this module (golden-set check) as well as the
runtime (live mirroring). ``score_pair`` takes two OIP v2 infer response documents for the same
request and returns one score per item of the batch:

- ``embedding_cosine`` (image-text-embedding): cosine similarity of each row of ``image_embeds``
  and ``text_embeds``, in [-1, 1]; higher is better. A row holding a non-finite or missing
  number (``null`` in JSON, e.g. an fp16 overflow) scores -1.0, the worst value.
- ``label_agreement`` (zero-shot-image-classification, image-classification): top-1 agreement,
  1.0 when both answers give the same ``label`` for an item, else 0.0; higher is better. When
  neither answer has ``label`` (the client asked for ``scores`` only), the arg-max of each row of
  ``scores`` is compared instead.
- ``text_similarity`` (image-to-text): token F1 of canary's ``text`` against stable's, in [0, 1];
  higher is better.
- ``word_error_rate`` (automatic-speech-recognition): WER of canary's transcript (hypothesis)
  against stable's (reference), >= 0; lower is better.

Tokenisation (token F1 and WER): lowercase, then split on every non-alphanumeric character, so
punctuation and case never count as a difference.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from mmop.runtime import contract

EMBEDDING_COSINE: Final = "embedding_cosine"
LABEL_AGREEMENT: Final = "label_agreement"
TEXT_SIMILARITY: Final = "text_similarity"
WORD_ERROR_RATE: Final = "word_error_rate"
METRICS: Final[tuple[str, ...]] = (
    EMBEDDING_COSINE,
    LABEL_AGREEMENT,
    TEXT_SIMILARITY,
    WORD_ERROR_RATE,
)
HIGHER_IS_BETTER: Final[Mapping[str, bool]] = MappingProxyType(
    {EMBEDDING_COSINE: True, LABEL_AGREEMENT: True, TEXT_SIMILARITY: True, WORD_ERROR_RATE: False}
)

_METRIC_BY_TASK: Final[Mapping[str, str]] = MappingProxyType(
    {
        contract.TASK_IMAGE_TEXT_EMBEDDING: EMBEDDING_COSINE,
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: LABEL_AGREEMENT,
        contract.TASK_IMAGE_CLASSIFICATION: LABEL_AGREEMENT,
        contract.TASK_IMAGE_TO_TEXT: TEXT_SIMILARITY,
        contract.TASK_ASR: WORD_ERROR_RATE,
    }
)
_EMBEDDING_OUTPUTS: Final = ("image_embeds", "text_embeds")
_TOKEN: Final = re.compile(r"[^\W_]+")  # runs of letters and digits (any script)


def metric_for_task(task: str) -> str:
    """The scoring metric of ``task``; ValueError for an unknown task."""
    try:
        return _METRIC_BY_TASK[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; expected one of {', '.join(contract.TASKS)}"
        ) from None


def tokens(text: str) -> list[str]:
    """The documented tokenisation: lowercase, split on non-alphanumerics, drop empty tokens."""
    return _TOKEN.findall(text.lower())


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two equally long vectors, in [-1, 1].

    Two zero vectors are identical (1.0); a zero vector against a non-zero one scores 0.0.
    ValueError for vectors of different lengths, empty vectors or non-finite components.
    """
    if len(a) != len(b):
        raise ValueError(f"cannot compare vectors of length {len(a)} and {len(b)}")
    if not a:
        raise ValueError("cannot compare empty vectors")
    if not all(math.isfinite(x) for x in a) or not all(math.isfinite(y) for y in b):
        raise ValueError("cannot compare vectors with non-finite components")
    norm_a = math.sqrt(math.fsum(x * x for x in a))
    norm_b = math.sqrt(math.fsum(y * y for y in b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    value = math.fsum(x * y for x, y in zip(a, b, strict=True)) / (norm_a * norm_b)
    return max(-1.0, min(1.0, value))  # rounding can step just outside


def token_f1(reference: str, candidate: str) -> float:
    """Token F1 (SQuAD-style, multiset overlap) of ``candidate`` against ``reference``, in [0, 1].

    Both without tokens: 1.0; only one without tokens: 0.0.
    """
    ref, cand = tokens(reference), tokens(candidate)
    if not ref or not cand:
        return 1.0 if not ref and not cand else 0.0
    common = sum((Counter(ref) & Counter(cand)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance (substitutions + deletions + insertions) / reference words.

    Both without words: 0.0. A reference without words against a non-empty hypothesis: 1.0 (every
    word is wrong; the ratio is otherwise undefined). Can exceed 1.0 when the hypothesis inserts
    more words than the reference has.
    """
    ref, hyp = tokens(reference), tokens(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))  # distances of ref[:0] to every hyp prefix
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1] / len(ref)


def score_pair(task: str, stable: Mapping[str, Any], canary: Mapping[str, Any]) -> list[float]:
    """One score per batch item of two OIP v2 infer responses to the same request.

    ValueError with a clear message when the answers cannot be compared: an unknown task, a
    document without ``outputs``, an output present in one answer only, binary (non-JSON)
    output data, or different shapes.
    """
    metric = metric_for_task(task)
    stable_outputs = _outputs(stable, who="stable")
    canary_outputs = _outputs(canary, who="canary")
    if metric == EMBEDDING_COSINE:
        return _embedding_scores(stable_outputs, canary_outputs)
    if metric == LABEL_AGREEMENT:
        return _label_scores(stable_outputs, canary_outputs)
    texts = _paired(stable_outputs, canary_outputs, "text")
    if texts is None:
        raise ValueError("neither answer has the 'text' output")
    stable_texts, canary_texts = (_strings(output, who=who) for output, who in texts)
    if len(stable_texts) != len(canary_texts):
        raise ValueError(
            f"'text' has {len(stable_texts)} items in the stable answer "
            f"but {len(canary_texts)} in the canary answer"
        )
    if metric == TEXT_SIMILARITY:
        return [token_f1(s, c) for s, c in zip(stable_texts, canary_texts, strict=True)]
    return [word_error_rate(s, c) for s, c in zip(stable_texts, canary_texts, strict=True)]


# --- helpers ---------------------------------------------------------------------------------

_Output = Mapping[str, Any]


def _outputs(document: Mapping[str, Any], *, who: str) -> dict[str, _Output]:
    if not isinstance(document, Mapping):
        raise ValueError(f"the {who} answer is not a JSON object")
    outputs = document.get("outputs")
    if not isinstance(outputs, list):
        raise ValueError(f"the {who} answer has no 'outputs' list")
    by_name: dict[str, _Output] = {}
    for position, output in enumerate(outputs):
        if not isinstance(output, Mapping) or not isinstance(output.get("name"), str):
            raise ValueError(f"outputs[{position}] of the {who} answer has no string 'name'")
        by_name[output["name"]] = output
    return by_name


def _paired(
    stable: Mapping[str, _Output], canary: Mapping[str, _Output], name: str
) -> tuple[tuple[_Output, str], tuple[_Output, str]] | None:
    """Both answers' ``name`` output; None when neither has it; ValueError when one lacks it."""
    if name not in stable and name not in canary:
        return None
    for outputs, who in ((stable, "stable"), (canary, "canary")):
        if name not in outputs:
            raise ValueError(f"the {who} answer lacks the {name!r} output")
    return (stable[name], "stable"), (canary[name], "canary")


def _data(output: _Output, *, who: str) -> list[Any]:
    data = output.get("data")
    if data is None:
        raise ValueError(
            f"{output['name']!r} in the {who} answer has no JSON 'data' "
            "(binary outputs cannot be compared)"
        )
    if not isinstance(data, list):
        raise ValueError(f"{output['name']!r} in the {who} answer: 'data' must be a list")
    return _flatten(data)


def _flatten(data: list[Any]) -> list[Any]:
    """Nested data (like the shape) or flat row-major data: both flatten the same way."""
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _shape(output: _Output, *, who: str) -> list[int]:
    shape = output.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ValueError(f"{output['name']!r} in the {who} answer has no valid 'shape'")
    return shape


def _strings(output: _Output, *, who: str) -> list[str]:
    values = _data(output, who=who)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{output['name']!r} in the {who} answer must hold strings")
    return values


def _rows(output: _Output, *, who: str) -> list[list[Any]]:
    """A [rows, columns] output as rows; ValueError when data and shape disagree."""
    shape = _shape(output, who=who)
    if len(shape) != 2:
        raise ValueError(
            f"{output['name']!r} in the {who} answer must have 2 dimensions, not {shape}"
        )
    rows, columns = shape
    values = _data(output, who=who)
    if len(values) != rows * columns:
        raise ValueError(
            f"{output['name']!r} in the {who} answer has {len(values)} values for shape {shape}"
        )
    return [values[r * columns : (r + 1) * columns] for r in range(rows)]


def _matrices(
    stable: Mapping[str, _Output], canary: Mapping[str, _Output], name: str
) -> tuple[list[list[Any]], list[list[Any]]] | None:
    pair = _paired(stable, canary, name)
    if pair is None:
        return None
    (stable_output, _), (canary_output, _) = pair
    stable_rows = _rows(stable_output, who="stable")
    canary_rows = _rows(canary_output, who="canary")
    if _shape(stable_output, who="stable") != _shape(canary_output, who="canary"):
        raise ValueError(
            f"{name!r} has shape {stable_output['shape']} in the stable answer "
            f"but {canary_output['shape']} in the canary answer"
        )
    return stable_rows, canary_rows


def _finite_numbers(row: Sequence[Any]) -> list[float] | None:
    numbers: list[float] = []
    for value in row:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return None
        numbers.append(float(value))
    return numbers


def _embedding_scores(stable: Mapping[str, _Output], canary: Mapping[str, _Output]) -> list[float]:
    scores: list[float] = []
    found = False
    for name in _EMBEDDING_OUTPUTS:
        matrices = _matrices(stable, canary, name)
        if matrices is None:
            continue
        found = True
        for stable_row, canary_row in zip(*matrices, strict=True):
            a, b = _finite_numbers(stable_row), _finite_numbers(canary_row)
            scores.append(-1.0 if a is None or b is None else cosine(a, b))
    if not found:
        raise ValueError(
            f"neither answer has an embedding output ({', '.join(_EMBEDDING_OUTPUTS)})"
        )
    return scores


def _label_scores(stable: Mapping[str, _Output], canary: Mapping[str, _Output]) -> list[float]:
    labels = _paired(stable, canary, "label")
    if labels is not None:
        stable_labels, canary_labels = (_strings(output, who=who) for output, who in labels)
        if len(stable_labels) != len(canary_labels):
            raise ValueError(
                f"'label' has {len(stable_labels)} items in the stable answer "
                f"but {len(canary_labels)} in the canary answer"
            )
        return [float(s == c) for s, c in zip(stable_labels, canary_labels, strict=True)]
    matrices = _matrices(stable, canary, "scores")
    if matrices is None:
        raise ValueError("neither answer has the 'label' or 'scores' output")
    return [_agreement(_argmax(s), _argmax(c)) for s, c in zip(*matrices, strict=True)]


def _agreement(stable_index: int, canary_index: int) -> float:
    return 1.0 if stable_index == canary_index and stable_index >= 0 else 0.0


def _argmax(row: Sequence[Any]) -> int:
    """Index of the largest finite score; -1 (agrees with nothing) when there is none."""
    finite = [index for index, value in enumerate(row) if _is_finite_number(value)]
    return max(finite, key=lambda index: row[index]) if finite else -1  # first of equal maxima


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
