"""Scaled values, `CoefA × raw + CoefB`, in float64 with one rounding.

`raw × 0.1` in float64 is `230.10000000000002` for a raw 2301, where the DATA files, MQTT and the
web say `230.1` (docs/formats.md §9.3: the exact decimal). The coefficients are decimals, so the
value is computed as `(raw × A + B) / D` with `A`, `B` and `D` integers (`CoefA = A / D`,
`CoefB = B / D`): for an integer raw (a register) the numerator is exact below 2^53 and the
division rounds once, to the float64 nearest the exact decimal, whose shortest text is that
decimal. One formula for `sd sql`, `sd export-parquet` and `ingest`, so their values agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Scaling:
    numerator_a: float   # A: raw × A + B over D
    numerator_b: float   # B
    denominator: float   # D

    @classmethod
    def of(cls, coef_a: Decimal, coef_b: Decimal) -> Scaling:
        a_num, a_den = coef_a.as_integer_ratio()
        b_num, b_den = coef_b.as_integer_ratio()
        return cls(float(a_num * b_den), float(b_num * a_den), float(a_den * b_den))

    def apply(self, raw: float) -> float:
        return (raw * self.numerator_a + self.numerator_b) / self.denominator
