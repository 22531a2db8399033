"""Request events: the model, the store protocol and its SQL implementation, and the bounded
background recorder that keeps writes off the request path."""

from genesis.events._model import EventStore, Feedback, Outcome, RequestEvent, UnitKind, Variant

__all__ = ["EventStore", "Feedback", "Outcome", "RequestEvent", "UnitKind", "Variant"]
