"""The embedded web UI and JSON API (docs/behaviour.md §10): see README.md."""

from __future__ import annotations

from pipeline.web.server import WebPlugin

__all__ = ["WebPlugin"]
