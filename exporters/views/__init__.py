"""Views: pure functions from a window's events to file and message bytes (see README.md).

One module per view; import the module you need (`from exporters.views import data`).
"""

__all__ = ["ack", "alarm", "context", "data", "gz", "log", "mqtt", "names", "numbers", "traces",
           "windows"]
