"""Error messages: what a client reads back of its own strings and of exception text is capped."""

from __future__ import annotations

import pytest

from mmop.runtime.errors import (
    MAX_MESSAGE_CHARS,
    InvalidInput,
    RuntimeFailure,
    detail,
    echo,
    one_line,
)


def test_echo_is_repr_when_short() -> None:
    assert echo("image") == "'image'"
    assert echo([1, 2]) == "[1, 2]"


@pytest.mark.parametrize("value", ["x" * 10_000, b"x" * 10_000, list(range(10_000))])
def test_echo_cuts_and_says_how_long(value: object) -> None:
    text = echo(value)
    assert len(text) < 100
    assert "characters)" in text


def test_detail_is_one_short_line() -> None:
    text = detail(ValueError("line one\nline two " + "y" * 10_000))
    assert text.startswith("line one line two")
    assert len(text) == 200
    assert "\n" not in text


def test_one_line_for_logs_is_longer_and_can_name_the_class() -> None:
    error = RuntimeError("first\nsecond " + "y" * 10_000)
    assert len(one_line(error)) == 500
    assert one_line(error, typed=True).startswith("RuntimeError: first second y")
    assert one_line(KeyError()) == "KeyError"  # no text: the class name


def test_every_message_is_capped() -> None:
    error: RuntimeFailure = InvalidInput("z" * 100_000)
    assert len(error.message) == MAX_MESSAGE_CHARS
    assert InvalidInput("short").message == "short"
