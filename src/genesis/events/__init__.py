"""Request events: the model, the store protocol and its SQL implementation, and the bounded
background recorder that keeps writes off the request path.

The SQL store is imported on first use: SQLAlchemy costs ~0.1-0.3 s to import here, which a
CLI command that records nothing should not pay.
"""

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
from genesis.events._export import (
    USAGE_GROUPS,
    ExportFormat,
    export_events,
    parse_time,
    parse_usage_groups,
)
from genesis.events._facts import (
    RequestFacts,
    begin_request_facts,
    current_request_facts,
    end_request_facts,
    note_fallback,
)
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
from genesis.events._pricing import Cost, PriceTable
from genesis.events._recorder import EventRecorder, RecorderStats
from genesis.events._tracker import Tracker

__all__ = [
    "USAGE_GROUPS",
    "Cost",
    "EventRecorder",
    "EventStore",
    "ExportFormat",
    "Feedback",
    "Outcome",
    "PriceTable",
    "RecorderStats",
    "RequestEvent",
    "RequestFacts",
    "SqlEventStore",
    "Tracker",
    "UnitKind",
    "UsageGroup",
    "UsageRow",
    "Variant",
    "begin_request_facts",
    "current_request_facts",
    "end_request_facts",
    "export_events",
    "note_fallback",
    "open_event_store",
    "parse_time",
    "parse_usage_groups",
]

if TYPE_CHECKING:
    from genesis.events._sql import SqlEventStore, open_event_store


__getattr__ = lazy_exports(
    __name__,
    {
        "SqlEventStore": "genesis.events._sql",
        "open_event_store": "genesis.events._sql",
    },
)
