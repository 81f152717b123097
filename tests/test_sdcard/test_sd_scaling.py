"""Scaled values are the float64 nearest the exact decimal `CoefA × raw + CoefB`, in `sd sql`,
`sd export-parquet` and `ingest` alike: `230.1` for a raw 2301 and a CoefA of 0.1, where
`raw × 0.1` gave `230.10000000000002`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
from hypothesis import assume, given
from hypothesis import strategies as st
from plant import Plant, sunpm

from sdcard.scaling import Scaling

_coefficients = st.decimals(min_value=-100_000, max_value=100_000, places=4,
                            allow_nan=False, allow_infinity=False)


@given(raw=st.integers(-2**31, 2**32), coef_a=_coefficients, coef_b=_coefficients)
def test_a_scaled_register_is_the_float_nearest_the_exact_decimal(
        raw: int, coef_a: Decimal, coef_b: Decimal) -> None:
    scaling = Scaling.of(coef_a, coef_b)
    # Exact while the numerator is an integer float64 holds exactly (registers and the
    # coefficients of definition files are far below this).
    assume(abs(raw * scaling.numerator_a) + abs(scaling.numerator_b) < 2**53)
    exact = coef_a * raw + coef_b  # Decimal: exact at these sizes
    assert scaling.apply(float(raw)) == float(exact)


def test_sql_and_parquet_give_the_decimal_the_files_give(month: Plant, tmp_path: Path) -> None:
    query = ("SELECT DISTINCT raw, scaled FROM records WHERE name = 'V_L1' AND raw = 2301")
    ran = sunpm("sd", "sql", month.dump, query, "--format", "csv")
    assert ran.out == "raw,scaled\n2301.0,230.1\n", ran.err
    assert sunpm("sd", "export-parquet", month.dump, tmp_path / "pq").code == 0


    rows = duckdb.sql(f"SELECT DISTINCT scaled FROM read_parquet('{tmp_path}/pq/uid=*/device=*/"
                      "date=*/*.parquet') WHERE name = 'V_L1' AND raw = 2301").fetchall()
    assert rows == [(230.1,)]
