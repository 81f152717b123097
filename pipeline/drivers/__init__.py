"""One driver per protocol behind the contract of `_base.py`, listed in `registry.py` (see
README.md)."""

__all__ = ["discovery", "io", "modbus", "registry", "sunspec", "tic", "tic_discovery", "writes"]
