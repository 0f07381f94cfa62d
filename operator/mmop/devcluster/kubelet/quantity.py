"""Kubernetes resource quantities ("500m", "16Gi", "1e3") as exact decimals."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: Final = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY: Final = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[a-zA-Z]*)$"
)


def parse_quantity(value: str | int | float) -> Decimal:
    """The value of a quantity in base units (cores, bytes, devices); ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        return base * Decimal(10) ** int(suffix[1:])
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    raise ValueError(f"not a quantity: {value!r} (unknown suffix {suffix!r})")


def format_quantity(value: Decimal) -> str:
    """A plain decimal string (no exponent) for a quantity, as small code paths need it."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
