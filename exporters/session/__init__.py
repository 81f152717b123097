"""Connection sessions with the plant's servers (docs/behaviour.md §4.2, §4.3, §4.4, §4.5); see
the exporters README. One room per concern: `outcome` (trigger, result, retry schedule),
`commands` (command file and messages), `config_sync` and `config_apply` (configuration both
ways, applied whole), `file_server` and `mqtt` (the two kinds of session). The names a service
needs to run sessions are here.
"""

from exporters.session.commands import CollectingHandler, CommandHandler, JournalSignal
from exporters.session.config_sync import ConfigApplied, Validator
from exporters.session.file_server import FileServerSession
from exporters.session.mqtt import EventPayload, MqttSession
from exporters.session.outcome import SessionResult, Trigger, retry_delay_s

__all__ = ["CollectingHandler", "CommandHandler", "ConfigApplied", "EventPayload",
           "FileServerSession", "JournalSignal", "MqttSession", "SessionResult", "Trigger",
           "Validator", "retry_delay_s"]
