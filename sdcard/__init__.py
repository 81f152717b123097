"""sunpm sdcard: offline work on a store or card dump (read-only), the fleet dataset and the card
mirror; see README.md. Imports `config`, `store` and `exporters.views` only.

Modules are imported where used (`sdcard.scan` pulls in DuckDB), so the service, which needs only
`sdcard.mirror.CardMirror`, loads nothing else.
"""

__all__ = ["dump", "export", "fsck", "ingest", "inspect", "mirror", "parquet", "reexport", "scan",
           "sql"]
