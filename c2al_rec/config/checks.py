"""Value checks shared by the sections' ``__post_init__``: finite floats, ranges; errors name the field.

Loading already rejects nan / inf in any float field; ``require_finite`` repeats that for sections
built in code (``dataclasses.replace`` in the workflows), so neither path can carry a nan into a run.

Example::

    require_finite(self, "train")
    require_range("train.grad_clip", self.grad_clip, low=0.0)
    require_range("train.dense_lr", self.dense_lr, low=0.0, low_open=True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from .errors import ConfigError, echo


def require_finite(section_obj: Any, section: str) -> None:
    """ConfigError naming the first float field (or float in a list field) that is nan or inf.

    Args:
        section_obj: a config section dataclass instance.
        section: its dotted name (``"train"``, ``"data.synthetic"``) for the message.
    """
    for f in dataclasses.fields(section_obj):
        value = getattr(section_obj, f.name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, float) and not math.isfinite(item):
                where = f"{section}.{f.name}" + (f"[{i}]" if isinstance(value, list) else "")
                raise ConfigError(f"{where} must be a finite number, got {echo(item)}")


def require_range(
    where: str,
    value: float,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """ConfigError unless ``low <= value <= high`` (``<`` on an open end); nan is always out of range.

    Args:
        where: the field's dotted name.
        value: the value to check.
        low, high: bounds; None leaves that end unbounded.
        low_open, high_open: exclude the bound itself.
    """
    ok = not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{where} must be in {lo}, {hi}, got {echo(value)}")
