"""Offline work on a store or card dump (read-only); see README.md. Nothing public yet."""

__all__: list[str] = []
