"""Lua automation scripts (docs/behaviour.md §9): lupa with Lua 5.4, one sandboxed state per script.

| module | what |
|---|---|
| `host.py` | `ScriptHost`, what `wd` needs from the gateway; `PollerHost` over `Poller` and `Log` |
| `loading.py` | scl.ini to `ScriptSource`s; `header` checks; problems naming file, line and field |
| `sandbox.py` | `LuaState`: the sandbox, the instruction, time and memory limits, JSON <-> Lua |
| `wd.py` | `Wd`: the `wd` API's callbacks, run in the Lua thread |
| `runner.py` | `ScriptRunner`: lifecycle, the Lua thread, timers, RPC, persistence, failures |
"""

from pipeline.scripts.errors import ScriptError
from pipeline.scripts.host import GoodValue, PollerHost, ScriptDevice, ScriptHost
from pipeline.scripts.loading import ScriptSource, script_sources, site_scripts
from pipeline.scripts.runner import ScriptRunner, ScriptStatus
from pipeline.scripts.sandbox import Limits

__all__ = [
    "GoodValue", "Limits", "PollerHost", "ScriptDevice", "ScriptError", "ScriptHost",
    "ScriptRunner", "ScriptSource", "ScriptStatus", "script_sources", "site_scripts",
]
