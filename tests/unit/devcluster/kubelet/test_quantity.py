"""devcluster/kubelet/quantity.py: Kubernetes quantities."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mmop.devcluster.kubelet.quantity import format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("16Gi", Decimal(16 * 2**30)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("2.5", Decimal("2.5")),
        ("0", Decimal(0)),
        (3, Decimal(3)),
    ],
)
def test_parses(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Qi", "1.2.3"])
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_formats_plainly() -> None:
    assert format_quantity(Decimal(4)) == "4"
    assert format_quantity(Decimal("0.5")) == "0.5"
