"""δ sanity: a δ of 1/n or more is no privacy at all.

The mechanism "publish one record chosen uniformly at random" is (0, 1/n)-DP under add/remove
or replace-one of a record (Dwork & Roth 2014, §2.3: it fails ε-DP only on the event that the
differing record is picked, probability 1/n), yet it reveals a whole record. So δ must be well
below 1/n: privtool refuses δ ≥ 1/n and warns when δ > 1/(10·n). For unit-level DP
(class/subclass) the units are the "records" of the guarantee and n is the number of units K.
"""

from __future__ import annotations

from privtool.errors import PrivtoolError


def check_delta(
    delta: float, n: int, what: str = "training records", *, name: str = "train.delta"
) -> str | None:
    """Raise for δ ≥ 1/n; return a warning line for δ > 1/(10n), else None."""
    if n < 1 or delta <= 0:
        return None
    if delta >= 1.0 / n:
        raise PrivtoolError(
            f"{name}={delta:g} is not below 1/n = 1/{n} = {1.0 / n:.3g} ({n} "
            f"{what}): with δ ≥ 1/n a mechanism may publish one of the "
            f"{what} whole; set "
            f"{name} at most 1/(10·n) = {0.1 / n:.3g}"
        )
    if delta > 0.1 / n:
        return (
            f"{name}={delta:g} is above 1/(10·n) = {0.1 / n:.3g} ({n} {what}); the usual "
            f"choice is δ well below 1/n, e.g. {_suggest(n):g}"
        )
    return None


def _suggest(n: int) -> float:
    """A round δ at most 1/(10n): the largest power of ten below it."""
    import math

    return 10.0 ** math.floor(math.log10(0.1 / n))
