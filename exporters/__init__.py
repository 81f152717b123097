"""sunpm exporters: views (pure: window -> bytes), the outbox, transports, sessions and backfill.

The public names live in their modules (see README.md); submodules are listed here rather than
imported, so that importing one view does not pull in every transport's client library.
"""

__all__ = ["backfill", "outbox", "retention", "session", "sources", "transports", "views"]
