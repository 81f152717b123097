"""One driver per protocol behind the contract of `_base.py` (see README.md)."""

__all__ = ["discovery", "io", "modbus", "sunspec", "tic", "tic_discovery"]
