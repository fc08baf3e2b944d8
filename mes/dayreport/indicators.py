"""The 28 day-report indicator values of one unit and day (spec 3.3.1 and 3.3.4).

Arithmetic is exact (fractions) and rounding is half-up on the exact value, so the worked
example of the spec comes out digit for digit and no binary-float artefact (0.125 -> 0.12)
changes a published figure. An undefined indicator is ``None``, never zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from numbers import Real

from config.errors import ChainmillError

__all__ = [
    "IndicatorError", "ShiftData", "SHIFTS", "INDICATORS", "NAMES", "UOM",
    "ideal_time", "shift_indicators", "day_indicators",
]

# (shift letter, shift digit, label); T is the whole day, computed from the day's sums.
SHIFTS: tuple[tuple[str, int, str], ...] = (
    ("A", 1, "Turno A"), ("B", 2, "Turno B"), ("C", 3, "Turno C"), ("T", 4, "Day"),
)
# (indicator code, indicator number, unit of measure)
INDICATORS: tuple[tuple[str, int, str], ...] = (
    ("D", 1, "%"), ("P", 2, "%"), ("Q", 3, "%"), ("OEE", 4, "%"),
    ("MTBF", 5, "min"), ("MTTR", 6, "min"), ("ProductionTime", 7, "min"),
)
UOM: dict[str, str] = {code: uom for code, _, uom in INDICATORS}
# The explicit list of the 28 names (the reference iterated over model fields instead).
NAMES: tuple[str, ...] = tuple(f"{s}_{i}" for s, _, _ in SHIFTS for i, _, _ in INDICATORS)

_HUNDRED = Fraction(100)
_PERCENT_PLACES = Decimal("0.01")
_MINUTE_PLACES = Decimal("0.1")


class IndicatorError(ChainmillError):
    """Shift inputs that cannot describe a real shift (negative, or parts exceeding the whole)."""


def _exact(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise IndicatorError(f"{what} must be a number, not {type(value).__name__}")
    try:
        exact = Fraction(value)  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        raise IndicatorError(f"{what} must be finite") from None
    if exact < 0:
        raise IndicatorError(f"{what} must not be negative")
    return exact


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IndicatorError(f"{what} must be an integer")
    if value < 0:
        raise IndicatorError(f"{what} must not be negative")
    return value


@dataclass(frozen=True, slots=True)
class ShiftData:
    """Inputs of one shift of one unit; times in minutes.

    ``ideal_time`` is the sum over products of ideal cycle time x count (see `ideal_time`).
    ``repair_time`` is the failure downtime (a part of the unplanned stop time). It may be
    positive with no failure: a breakdown that began in the previous shift is counted there.
    """

    shift_length: Real | Decimal
    planned_stop: Real | Decimal
    unplanned_stop: Real | Decimal
    failures: int
    repair_time: Real | Decimal
    total_count: int
    good_count: int
    ideal_time: Real | Decimal

    def __post_init__(self) -> None:
        length = _exact(self.shift_length, "shift length")
        planned = _exact(self.planned_stop, "planned stop time")
        unplanned = _exact(self.unplanned_stop, "unplanned stop time")
        repair = _exact(self.repair_time, "repair time")
        _exact(self.ideal_time, "ideal time")
        _count(self.failures, "number of failures")
        total = _count(self.total_count, "total count")
        good = _count(self.good_count, "good count")
        if planned > length:
            raise IndicatorError("planned stop time exceeds the shift length")
        if unplanned > length - planned:
            raise IndicatorError("unplanned stop time exceeds the planned production time")
        if repair > unplanned:
            raise IndicatorError("repair time exceeds the unplanned stop time")
        if good > total:
            raise IndicatorError("good count exceeds total count")


def ideal_time(products: Iterable[tuple[Real | Decimal, int]]) -> Fraction:
    """Sum of ideal cycle time (minutes per part) x count over the products of a shift."""
    total = Fraction(0)
    for cycle, count in products:
        total += _exact(cycle, "ideal cycle time") * _count(count, "count")
    return total


@dataclass(frozen=True, slots=True)
class _Totals:
    ppt: Fraction
    run: Fraction
    ideal: Fraction
    total: int
    good: int
    failures: int
    repair: Fraction


def _totals(shift: ShiftData) -> _Totals:
    ppt = Fraction(shift.shift_length) - Fraction(shift.planned_stop)
    return _Totals(ppt=ppt, run=ppt - Fraction(shift.unplanned_stop),
                   ideal=Fraction(shift.ideal_time), total=shift.total_count,
                   good=shift.good_count, failures=shift.failures,
                   repair=Fraction(shift.repair_time))


def _round(value: Fraction, places: Decimal) -> float:
    # Decimal division to 40 digits is exact enough for half-up rounding of 1-2 places.
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return float(exact.quantize(places, rounding=ROUND_HALF_UP))


def _formulas(t: _Totals) -> dict[str, float | None]:
    d = p = q = oee = None
    if t.ppt > 0:
        d = t.run / t.ppt
        p = min(t.ideal / t.run, Fraction(1)) if t.run > 0 else None
        q = Fraction(t.good, t.total) if t.total > 0 else None
        # Taken as 0 whenever D = 0 or nothing was produced (P or Q undefined then).
        oee = d * p * q if d > 0 and p is not None and q is not None else Fraction(0)
    mtbf = t.run / t.failures if t.failures else None
    mttr = t.repair / t.failures if t.failures else None

    def pct(x: Fraction | None) -> float | None:
        return None if x is None else _round(x * _HUNDRED, _PERCENT_PLACES)

    def mins(x: Fraction | None) -> float | None:
        return None if x is None else _round(x, _MINUTE_PLACES)

    return {"D": pct(d), "P": pct(p), "Q": pct(q), "OEE": pct(oee),
            "MTBF": mins(mtbf), "MTTR": mins(mttr), "ProductionTime": mins(t.run)}


def shift_indicators(shift: ShiftData) -> dict[str, float | None]:
    """The seven indicators of one shift, keyed by indicator code; None = undefined."""
    return _formulas(_totals(shift))


def day_indicators(shifts: Mapping[str, ShiftData]) -> dict[str, float | None]:
    """The 28 values ``<shift letter>_<indicator code>`` for shifts A, B and C.

    The whole day (T) comes from the sums of the shifts' times, counts, failures and repair
    time through the same formulas, never from the mean of the shift values.
    """
    letters = [s for s, _, _ in SHIFTS[:3]]
    if set(shifts) != set(letters):
        raise IndicatorError(f"a day report needs exactly the shifts {', '.join(letters)}")
    totals = [_totals(shifts[s]) for s in letters]
    day = _Totals(
        ppt=sum((t.ppt for t in totals), Fraction(0)), run=sum((t.run for t in totals), Fraction(0)),
        ideal=sum((t.ideal for t in totals), Fraction(0)), total=sum(t.total for t in totals),
        good=sum(t.good for t in totals), failures=sum(t.failures for t in totals),
        repair=sum((t.repair for t in totals), Fraction(0)))
    values: dict[str, float | None] = {}
    for letter, t in [*zip(letters, totals, strict=True), ("T", day)]:
        for code, value in _formulas(t).items():
            values[f"{letter}_{code}"] = value
    return {name: values[name] for name in NAMES}
