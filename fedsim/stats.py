"""Statistics over seeds, with one convention for every table fedsim and its benchmarks print.

* **Missing values** — ``None`` and NaN (a run that has no such score, a metric undefined in a
  round) — are left out; the statistics are over the values present.
* **Mean ± std** is the mean and the *sample* standard deviation (n − 1) of those values. With no
  value both are ``None``; with one value the mean is that value and the std is ``None``: a
  sample std needs two values, and a spread of 0 would claim a precision one seed cannot show.
* **Paired differences** (arm − reference, seed by seed) come with the 95% confidence interval of
  their mean from Student's t with n − 1 degrees of freedom; only seeds present in both count, and
  fewer than two pairs give no interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def present(values: Iterable[Any]) -> list[float]:
    """The values that are numbers, not None and not NaN, as floats."""
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation (n − 1)) of the values present (see the module's
    convention): (None, None) for none, (v, None) for one."""
    vals = present(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def t_quantile(n: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with n − 1 degrees of freedom (n ≥ 2):
    the factor of a ``level`` confidence interval of a mean of n values."""
    from scipy.stats import t  # scipy only where an interval is asked for: it is slow to import

    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    return float(t.ppf(0.5 + level / 2, n - 1))


def paired_ci(arm: Mapping[Any, float | None], reference: Mapping[Any, float | None],
              level: float = 0.95) -> dict[str, Any] | None:
    """The seed-by-seed differences arm − reference (keys are seeds; a seed missing from either,
    or None / NaN in either, has no pair) → {"mean", "half_width" (of the ``level`` t interval),
    "n", "values" (the differences, by sorted seed)}, or None with fewer than two pairs."""
    diffs = []
    for seed in sorted(arm):
        if seed not in reference:
            continue
        pair = present([arm[seed], reference[seed]])
        if len(pair) == 2:
            diffs.append(pair[0] - pair[1])
    if len(diffs) < 2:
        return None
    mean, sd = mean_std(diffs)
    assert mean is not None and sd is not None  # two values or more
    half = t_quantile(len(diffs), level) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "half_width": half, "n": len(diffs), "values": diffs}
