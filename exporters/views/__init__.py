"""Views: pure functions from a window's events to file and message bytes (see README.md).

One module per view; import the module you need (`from exporters.views import data`).
"""

__all__ = ["ack", "alarm", "backfill", "context", "data", "events", "gz", "journaled", "log",
           "mqtt", "names", "numbers", "render", "traces", "windows"]
