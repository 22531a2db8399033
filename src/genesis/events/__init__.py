"""Request events: the model, the store protocol and its SQL implementation, and the bounded
background recorder that keeps writes off the request path."""

from genesis.events._export import ExportFormat, export_events, parse_time
from genesis.events._model import (
    EventStore,
    Feedback,
    Outcome,
    RequestEvent,
    UnitKind,
    UsageGroup,
    UsageRow,
    Variant,
)
from genesis.events._sql import SqlEventStore, open_event_store

__all__ = [
    "EventStore",
    "ExportFormat",
    "Feedback",
    "Outcome",
    "RequestEvent",
    "SqlEventStore",
    "UnitKind",
    "UsageGroup",
    "UsageRow",
    "Variant",
    "export_events",
    "open_event_store",
    "parse_time",
]
