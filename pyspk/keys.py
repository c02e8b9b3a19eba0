"""Unknown-key errors that name the nearest valid key (every config reader uses this).

A misspelled yaml key must never be ignored silently: ``check_keys`` raises naming the
file or section, the unknown key and the closest valid one. Nor may a NaN or an infinity
(yaml's ``.nan``, ``.inf``) pass as a setting: when ``mapping`` is a mapping, its values
(and the items of list values) are checked to be finite numbers where they are floats.
"""

from __future__ import annotations

import difflib
import math
from typing import Iterable, Mapping, Type


def nearest_hint(key: object, valid: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest valid key, else the list of valid keys."""
    valid = list(valid)
    near = difflib.get_close_matches(str(key), valid, n=1, cutoff=cutoff)
    return f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(valid)})"


def check_keys(
    mapping: Iterable[object], valid: Iterable[str], where: str, error: Type[Exception] = ValueError, what: str = "key"
) -> None:
    """Raise ``error`` for the first key of ``mapping`` that is not in ``valid``, or (for a
    mapping) whose value is a NaN or infinite float, or a list holding one."""
    valid = list(valid)
    for key in mapping:
        if key not in valid:
            raise error(f"{where}: unknown {what} '{key}'{nearest_hint(key, valid)}")
    if isinstance(mapping, Mapping):
        for key, value in mapping.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                raise error(f"{where}: {what} '{key}': expected a finite number, got {value}")
