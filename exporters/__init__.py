"""sunpm exporters: views (pure: window -> bytes), rendering from a store, the outbox, retention,
transports and sessions.

The public names live in their modules (see README.md); submodules are listed here rather than
imported, so that importing one view does not pull in every transport's client library.
"""

__all__ = ["outbox", "rendering", "retention", "session", "sources", "transports", "views"]
