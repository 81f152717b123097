"""sunpm pipeline: the live gateway (drivers, poll loop, recorder, traces, Lua scripts, the `sunpm` CLI).

The public names live in their modules (see README.md); submodules are listed here rather than
imported, so that `sunpm config ...` does not load the Modbus stack.
"""

__all__ = ["cli", "clock", "drivers", "poller", "recorder", "scripts", "traces"]
