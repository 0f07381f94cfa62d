"""The quality-gate scorers on known pairs: perfect, opposite, different and malformed answers."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest

from mmop.runtime import contract, protocol, scoring
from mmop.runtime.faults import wrong_answer


def _answer(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": "m", "outputs": list(outputs)}


def _matrix(name: str, rows: list[list[Any]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    return {"name": name, "datatype": "FP32", "shape": [len(rows), len(rows[0])], "data": flat}


def _strings(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}


class TestMetricForTask:
    @pytest.mark.parametrize(
        ("task", "metric"),
        [
            (contract.TASK_IMAGE_TEXT_EMBEDDING, scoring.EMBEDDING_COSINE),
            (contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION, scoring.LABEL_AGREEMENT),
            (contract.TASK_IMAGE_CLASSIFICATION, scoring.LABEL_AGREEMENT),
            (contract.TASK_IMAGE_TO_TEXT, scoring.TEXT_SIMILARITY),
            (contract.TASK_ASR, scoring.WORD_ERROR_RATE),
        ],
    )
    def test_every_task_has_its_metric(self, task: str, metric: str) -> None:
        assert scoring.metric_for_task(task) == metric

    def test_unknown_task(self) -> None:
        with pytest.raises(ValueError, match="unknown task 'nope'"):
            scoring.metric_for_task("nope")

    def test_direction_of_every_metric(self) -> None:
        assert set(scoring.HIGHER_IS_BETTER) == set(scoring.METRICS)
        assert [m for m in scoring.METRICS if not scoring.HIGHER_IS_BETTER[m]] == [
            scoring.WORD_ERROR_RATE
        ]


class TestCosine:
    def test_identical(self) -> None:
        assert scoring.cosine([0.3, -1.2, 4.0], [0.3, -1.2, 4.0]) == pytest.approx(1.0)

    def test_scale_does_not_matter(self) -> None:
        assert scoring.cosine([1.0, 2.0], [3.0, 6.0]) == pytest.approx(1.0)

    def test_orthogonal(self) -> None:
        assert scoring.cosine([1.0, 0.0], [0.0, 5.0]) == pytest.approx(0.0)

    def test_opposite(self) -> None:
        assert scoring.cosine([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]) == pytest.approx(-1.0)

    def test_known_angle(self) -> None:
        assert scoring.cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))

    def test_zero_vectors(self) -> None:
        assert scoring.cosine([0.0, 0.0], [0.0, 0.0]) == 1.0
        assert scoring.cosine([0.0, 0.0], [1.0, 0.0]) == 0.0

    @pytest.mark.parametrize(
        ("a", "b", "message"),
        [
            ([1.0], [1.0, 2.0], "length 1 and 2"),
            ([], [], "empty"),
            ([math.nan], [1.0], "non-finite"),
            ([1.0], [math.inf], "non-finite"),
        ],
    )
    def test_invalid(self, a: list[float], b: list[float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            scoring.cosine(a, b)


class TestTokenF1:
    def test_identical(self) -> None:
        assert scoring.token_f1("a cat on a mat", "a cat on a mat") == 1.0

    def test_case_and_punctuation_do_not_count(self) -> None:
        assert scoring.token_f1("A cat, on the mat.", "a CAT on the mat") == 1.0

    def test_known_partial_overlap(self) -> None:
        # reference 4 tokens, candidate 2, overlap {cat, sat}: P = 1, R = 0.5, F1 = 2/3
        assert scoring.token_f1("the cat sat down", "cat sat") == pytest.approx(2 / 3)

    def test_repeated_tokens_count_as_a_multiset(self) -> None:
        # overlap is two "dog"s (not one, not three): P = 2/3, R = 2/3, F1 = 2/3
        assert scoring.token_f1("dog dog cat", "dog dog dog") == pytest.approx(2 / 3)

    def test_disjoint(self) -> None:
        assert scoring.token_f1("a red car", "two dogs") == 0.0

    def test_empty(self) -> None:
        assert scoring.token_f1("", "...") == 1.0
        assert scoring.token_f1("", "words") == 0.0
        assert scoring.token_f1("words", "") == 0.0

    def test_tokenisation(self) -> None:
        assert scoring.tokens("Hello, World! snake_case x2 Ünïcode") == [
            "hello",
            "world",
            "snake",
            "case",
            "x2",
            "ünïcode",
        ]


class TestWordErrorRate:
    def test_identical(self) -> None:
        assert scoring.word_error_rate("the quick brown fox", "The quick, brown fox!") == 0.0

    def test_one_substitution(self) -> None:
        assert scoring.word_error_rate("the quick brown fox", "the quick green fox") == 0.25

    def test_one_deletion(self) -> None:
        assert scoring.word_error_rate("the quick brown fox", "the brown fox") == 0.25

    def test_insertions(self) -> None:
        assert scoring.word_error_rate("hello world", "oh hello big world") == 1.0

    def test_mixed_edits(self) -> None:
        # ref: a b c d e; hyp: a x c e f -> substitute b->x, delete d, insert f: 3 / 5
        assert scoring.word_error_rate("a b c d e", "a x c e f") == pytest.approx(0.6)

    def test_more_insertions_than_reference_words_exceeds_one(self) -> None:
        assert scoring.word_error_rate("yes", "no no no") == 3.0

    def test_empty(self) -> None:
        assert scoring.word_error_rate("", "") == 0.0
        assert scoring.word_error_rate("", "something") == 1.0
        assert scoring.word_error_rate("two words", "") == 1.0


class TestScorePairEmbeddings:
    task = contract.TASK_IMAGE_TEXT_EMBEDDING

    def test_identical_answers_score_one_per_row(self) -> None:
        answer = _answer(
            _matrix("image_embeds", [[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]]),
            _matrix("text_embeds", [[0.5, 0.5, 0.0]]),
        )
        assert scoring.score_pair(self.task, answer, answer) == pytest.approx([1.0, 1.0, 1.0])

    def test_orthogonal_and_opposite_rows(self) -> None:
        stable = _answer(_matrix("image_embeds", [[1.0, 0.0], [1.0, 2.0]]))
        canary = _answer(_matrix("image_embeds", [[0.0, 1.0], [-1.0, -2.0]]))
        assert scoring.score_pair(self.task, stable, canary) == pytest.approx([0.0, -1.0])

    def test_nested_data_like_the_shape(self) -> None:
        stable = _answer(_matrix("text_embeds", [[1.0, 0.0], [0.0, 1.0]]))
        canary = _answer(
            {"name": "text_embeds", "shape": [2, 2], "datatype": "FP32", "data": [[1, 0], [1, 1]]}
        )
        assert scoring.score_pair(self.task, stable, canary) == pytest.approx(
            [1.0, 1 / math.sqrt(2)]
        )

    def test_null_components_score_worst(self) -> None:
        stable = _answer(_matrix("image_embeds", [[1.0, 0.0], [1.0, 0.0]]))
        canary = _answer(_matrix("image_embeds", [[None, 0.0], [1.0, 0.0]]))
        assert scoring.score_pair(self.task, stable, canary) == [-1.0, 1.0]

    def test_shape_mismatch(self) -> None:
        stable = _answer(_matrix("image_embeds", [[1.0, 0.0]]))
        canary = _answer(_matrix("image_embeds", [[1.0, 0.0, 0.0]]))
        with pytest.raises(ValueError, match=r"'image_embeds' has shape \[1, 2\] .* \[1, 3\]"):
            scoring.score_pair(self.task, stable, canary)

    def test_output_missing_from_one_answer(self) -> None:
        stable = _answer(_matrix("image_embeds", [[1.0]]), _matrix("text_embeds", [[1.0]]))
        canary = _answer(_matrix("image_embeds", [[1.0]]))
        with pytest.raises(ValueError, match="the canary answer lacks the 'text_embeds' output"):
            scoring.score_pair(self.task, stable, canary)

    def test_no_embedding_output(self) -> None:
        with pytest.raises(ValueError, match="neither answer has an embedding output"):
            scoring.score_pair(self.task, _answer(), _answer())

    def test_data_disagrees_with_shape(self) -> None:
        broken = _answer({"name": "image_embeds", "shape": [2, 2], "data": [1.0, 2.0, 3.0]})
        with pytest.raises(ValueError, match=r"has 3 values for shape \[2, 2\]"):
            scoring.score_pair(self.task, broken, broken)

    def test_binary_output_cannot_be_compared(self) -> None:
        binary = _answer(
            {"name": "image_embeds", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
        )
        with pytest.raises(ValueError, match="binary outputs cannot be compared"):
            scoring.score_pair(self.task, binary, binary)


class TestScorePairLabels:
    task = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION

    def test_identical_labels(self) -> None:
        answer = _answer(
            _matrix("scores", [[0.9, 0.1], [0.2, 0.8]]), _strings("label", ["a cat", "a dog"])
        )
        assert scoring.score_pair(self.task, answer, answer) == [1.0, 1.0]

    def test_different_labels(self) -> None:
        stable = _answer(_strings("label", ["a cat", "a dog", "a car"]))
        canary = _answer(_strings("label", ["a cat", "a cat", "a car"]))
        assert scoring.score_pair(contract.TASK_IMAGE_CLASSIFICATION, stable, canary) == [
            1.0,
            0.0,
            1.0,
        ]

    def test_scores_only_compares_the_arg_max(self) -> None:
        stable = _answer(_matrix("scores", [[0.9, 0.1], [0.4, 0.6]]))
        canary = _answer(_matrix("scores", [[0.6, 0.4], [0.7, 0.3]]))
        assert scoring.score_pair(self.task, stable, canary) == [1.0, 0.0]

    def test_scores_without_a_finite_value_never_agree(self) -> None:
        broken = _answer(_matrix("scores", [[None, None]]))
        assert scoring.score_pair(self.task, broken, broken) == [0.0]

    def test_different_batch_sizes(self) -> None:
        stable = _answer(_strings("label", ["a", "b"]))
        canary = _answer(_strings("label", ["a"]))
        with pytest.raises(ValueError, match="'label' has 2 items in the stable answer but 1"):
            scoring.score_pair(self.task, stable, canary)

    def test_no_label_and_no_scores(self) -> None:
        with pytest.raises(ValueError, match="neither answer has the 'label' or 'scores' output"):
            scoring.score_pair(self.task, _answer(), _answer())

    def test_labels_must_be_strings(self) -> None:
        stable = _answer(_strings("label", ["a"]))
        canary = _answer({"name": "label", "shape": [1], "data": [3]})
        with pytest.raises(ValueError, match="'label' in the canary answer must hold strings"):
            scoring.score_pair(self.task, stable, canary)


class TestScorePairTexts:
    def test_captions_token_f1_per_item(self) -> None:
        stable = _answer(_strings("text", ["a cat on a mat", "a red car"]))
        canary = _answer(_strings("text", ["A cat on a mat.", "two dogs"]))
        assert scoring.score_pair(contract.TASK_IMAGE_TO_TEXT, stable, canary) == [1.0, 0.0]

    def test_transcripts_wer_per_item(self) -> None:
        stable = _answer(_strings("text", ["the quick brown fox", "hello"]))
        canary = _answer(_strings("text", ["the quick green fox", "hello"]))
        assert scoring.score_pair(contract.TASK_ASR, stable, canary) == [0.25, 0.0]

    def test_wer_takes_stable_as_the_reference(self) -> None:
        stable = _answer(_strings("text", ["one two"]))
        canary = _answer(_strings("text", ["one two three four"]))
        assert scoring.score_pair(contract.TASK_ASR, stable, canary) == [1.0]
        assert scoring.score_pair(contract.TASK_ASR, canary, stable) == [0.5]

    def test_different_batch_sizes(self) -> None:
        stable = _answer(_strings("text", ["a", "b"]))
        canary = _answer(_strings("text", ["a", "b", "c"]))
        with pytest.raises(ValueError, match="2 items in the stable answer but 3 in the canary"):
            scoring.score_pair(contract.TASK_ASR, stable, canary)

    def test_text_missing(self) -> None:
        with pytest.raises(ValueError, match="the stable answer lacks the 'text' output"):
            scoring.score_pair(
                contract.TASK_IMAGE_TO_TEXT, _answer(), _answer(_strings("text", ["x"]))
            )


class TestScorePairMalformed:
    @pytest.mark.parametrize(
        ("stable", "canary", "message"),
        [
            ({}, _answer(), "the stable answer has no 'outputs' list"),
            (_answer(), {"outputs": {"text": "x"}}, "the canary answer has no 'outputs' list"),
            (_answer({"shape": [1]}), _answer(), r"outputs\[0\] of the stable answer has no"),
            ([], _answer(), "the stable answer is not a JSON object"),
        ],
    )
    def test_malformed_documents(self, stable: Any, canary: Any, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            scoring.score_pair(contract.TASK_IMAGE_TO_TEXT, stable, canary)

    def test_unknown_task(self) -> None:
        with pytest.raises(ValueError, match="unknown task"):
            scoring.score_pair("translation", _answer(), _answer())

    def test_invalid_shape(self) -> None:
        broken = _answer({"name": "scores", "shape": "2x2", "data": [1, 2, 3, 4]})
        with pytest.raises(ValueError, match="'scores' in the stable answer has no valid 'shape'"):
            scoring.score_pair(contract.TASK_IMAGE_CLASSIFICATION, broken, broken)

    def test_empty_batch_has_no_scores(self) -> None:
        empty = _answer(_strings("text", []))
        assert scoring.score_pair(contract.TASK_ASR, empty, empty) == []


def test_the_wrong_answers_fault_scores_as_wrong_in_every_metric() -> None:
    """MMOP_FAULT_WRONG_ANSWERS (the e2e live-comparison test's canary) must look wrong to
    every scorer, while keeping the answer well-formed (same names, shapes, datatypes)."""

    def doc(outputs: list[protocol.OutputTensor]) -> dict[str, Any]:
        body = protocol.infer_response(
            model_name="m", model_version=None, request_id=None, outputs=outputs
        )
        return json.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))

    scores = protocol.OutputTensor("scores", "FP32", (2, 3), np.array([[0.1, 0.7, 0.2]] * 2))
    labels = protocol.OutputTensor("label", "BYTES", (2,), ["cat", "cat"])
    embedding = protocol.OutputTensor("image_embeds", "FP32", (1, 2), np.array([[0.6, 0.8]]))
    text = protocol.OutputTensor("text", "BYTES", (1,), ["a cat on a mat"])
    right = [scores, labels]
    wrong = [wrong_answer(o) for o in right]
    assert [(o.name, o.datatype, o.shape) for o in wrong] == [
        (o.name, o.datatype, o.shape) for o in right
    ]
    task = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
    assert scoring.score_pair(task, doc(right), doc(wrong)) == [0.0, 0.0]
    assert scoring.score_pair(task, doc(right), doc(right)) == [1.0, 1.0]
    embed_task = contract.TASK_IMAGE_TEXT_EMBEDDING
    cosine = scoring.score_pair(embed_task, doc([embedding]), doc([wrong_answer(embedding)]))
    assert cosine == [pytest.approx(-1.0)]
    caption = scoring.score_pair(
        contract.TASK_IMAGE_TO_TEXT, doc([text]), doc([wrong_answer(text)])
    )
    assert caption == [0.0]
