"""Values as a one-line error message shows them: a number of hundreds of digits by its size,
a long text by its start and length.

A pasted or mistyped value (a 400-digit integer in a configuration, a score or a duration in a
JSON file) used to be printed whole, hundreds of characters in a message meant to be one line.
Free of torch and YAML, so that :mod:`case.metrics` (NumPy only) and the data readers use it too.

Examples
--------
>>> shown(10**400)
'an integer of 401 digits'
>>> shown(-(10**400 - 1))
'an integer of 400 digits'
>>> shown("x" * 100)
"'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (102 characters)"
>>> shown([0.5, 2])
'[0.5, 2]'
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MAX_DIGITS_SHOWN", "clip", "describe_int", "shown", "shorten_numbers"]

#: A run of digits longer than this in an error is a pasted or mistyped value: shown by its size.
MAX_DIGITS_SHOWN = 40


def clip(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: its start and length when it is long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def describe_int(value: int) -> str:
    """An integer for a message: itself, or its size when it is too long to print."""
    if value.bit_length() <= 64:
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1  # one too many when |value| < 10**(digits - 1)
    return f"an integer of {digits - (abs(value) < 10 ** (digits - 1))} digits"


def shown(value: Any) -> str:
    """``value`` as an error shows it: an integer of hundreds of digits by its size, a long
    text or list by its start and length (its runs of digits by their size), so that the
    message stays one readable line."""
    if type(value) is int:
        return describe_int(value)
    return clip(shorten_numbers(repr(value)))


def shorten_numbers(message: str) -> str:
    """``message`` with every run of more than :data:`MAX_DIGITS_SHOWN` digits replaced by its size.

    For checks that print the value they refuse (``train.seed must be an integer in [0, 2**32 -
    1], got 1111...``), whatever its length.

    Examples
    --------
    >>> shorten_numbers("train.seed must be an integer in [0, 2**32 - 1], got " + "1" * 400)
    'train.seed must be an integer in [0, 2**32 - 1], got an integer of 400 digits'
    """
    long_number = rf"-?\d{{{MAX_DIGITS_SHOWN + 1},}}"
    return re.sub(long_number, lambda run: f"an integer of {len(run[0].lstrip('-'))} digits", message)
