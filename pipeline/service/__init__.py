"""The gateway service (`sunpm run`): everything wired in one asyncio TaskGroup.

| module | what |
|---|---|
| `gateway.py` | `Gateway`: configuration, store, poll loop, sessions, alarms, stop |
| `wiring.py` | drivers, links and read plans of a `Site` |
| `scheduler.py` | `SlotScheduler`: when each server gets a session |
| `alarms.py` | gateway and device alarms, heartbeats, Power ON / Power OFF |
| `clock_check.py` | the SNTP clock check, quality 7 and the clock alarms |
| `commands.py` | `CommandExecutor`: one queue for all channels, callerId de-duplication |
| `local.py` | `<data>/sunpm.sock`, the local command channel of `sunpm cmd` |
| `logs.py` | stderr log lines and `log` journal events |
| `sms.py` | SMS commands: the grammar, the `SMS_InboxDir` folder, replies and the six-part status |
| `status.py` | the status object and each server's backlog (`<data>/status.json`) |
| `demo.py` | the demo plant of `sunpm run` without a configuration |
"""

__all__ = ["alarms", "clock_check", "commands", "demo", "gateway", "local", "logs",
           "scheduler", "sms", "status", "wiring"]
