"""Agent cards built from agent profiles: the router's view of configuration."""

from __future__ import annotations

from collections.abc import Iterable

from genesis.config import AgentProfile, Settings, load_settings
from genesis.router._types import AgentCard


def cards_from_profiles(profiles: Iterable[AgentProfile]) -> list[AgentCard]:
    """One card per profile, with copies of its lists (profiles stay untouched)."""
    return [
        AgentCard(
            name=p.name,
            description=p.description,
            keywords=list(p.keywords),
            patterns=list(p.patterns),
            examples=list(p.examples),
        )
        for p in profiles
    ]


def default_cards(settings: Settings | None = None) -> list[AgentCard]:
    """The cards of the configured agents (packaged ``dev`` settings when none are given)."""
    settings = settings or load_settings("dev", environ={})
    return cards_from_profiles(settings.agents.values())
