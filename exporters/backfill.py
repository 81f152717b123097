"""Backfill of one server's windows: re-exported from `exporters.views.backfill`.

The planning and rendering live beside the views so that the offline re-export, which may import
only `config`, `store` and `exporters.views` (docs/architecture.md §2), shares them with
`sunpm export`.
"""

from __future__ import annotations

from exporters.views.backfill import (
    BackfillError,
    BackfillFile,
    BackfillWindow,
    RecordReader,
    missing_records,
    plan_backfill,
    render_backfill,
)
from exporters.views.windows import split_backfill

__all__ = ["BackfillError", "BackfillFile", "BackfillWindow", "RecordReader", "missing_records",
           "plan_backfill", "render_backfill", "split_backfill"]
