"""Conversation history in a prompt: turns, their segment text, and which of them fit.

A :class:`Turn` is one exchange (the user's message and the answer to it; a client's own
system message rides along as a line of the turn it came with). Each turn is one prompt
segment, so its token IDs are cached like a chunk's (content-addressed: the same turn costs
nothing on the next request of the conversation) and the assembled prompt stays free of
retokenization drift.

Where history goes, and why there: after the context chunks, before the question::

    {system} Context: [1] chunk ... Conversation so far: {turn} {turn} Question: ... Answer:

The system prompt and the chunks (in their stable order) are the prefix an inference server's
prefix cache reuses; history grows with every turn, so placed before the chunks it would
change that prefix on every request of a conversation. After them, only the tail differs, and
the previous turns themselves are a stable prefix of the next request's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from genesis.tokens._protocol import TokenIds
from genesis.tokens._segments import normalize_segment

Role = Literal["system", "user", "assistant"]
_LABELS: dict[str, str] = {"system": "System", "user": "User", "assistant": "Assistant"}
# History takes at most this share of the room left after the system prompt and the
# question; the chunks get the rest (and whatever history leaves unused). Retrieved context
# is what grounds an answer, so it is never crowded out by a long conversation.
HISTORY_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange of a conversation, as ``(role, text)`` lines in order."""

    lines: tuple[tuple[Role, str], ...]

    @classmethod
    def exchange(cls, question: str, answer: str) -> Turn:
        return cls((("user", question), ("assistant", answer)))

    def segment_text(self) -> str:
        """The turn's prompt segment (normal form): ``User: ...`` / ``Assistant: ...``."""
        body = "\n".join(f"{_LABELS[role]}: {text.strip()}" for role, text in self.lines)
        return normalize_segment(body)


def turns_from_messages(messages: Sequence[tuple[Role, str]]) -> list[Turn]:
    """Group earlier chat messages into turns: a user message opens a turn (unless only
    system lines are waiting for one), an answer joins the turn it replies to, and a system
    message after an answer opens the next turn. Blank messages are left out."""
    turns: list[list[tuple[Role, str]]] = []
    for role, text in messages:
        if not text.strip():
            continue
        if not turns or _opens_turn(role, turns[-1]):
            turns.append([])
        turns[-1].append((role, text))
    return [Turn(tuple(t)) for t in turns]


def _opens_turn(role: Role, current: list[tuple[Role, str]]) -> bool:
    roles = {r for r, _ in current}
    if role == "user":
        return roles != {"system"}
    return role == "system" and "assistant" in roles


def pick_recent(ids: Sequence[TokenIds], room: int, header_tokens: int) -> tuple[list[int], int]:
    """Indexes (chronological) of the newest turns that fit ``room`` tokens with the header,
    and the tokens they use. Oldest turns go first; a turn whose IDs are empty (the segment
    encoder refused it) is left out. Exact: the count is the sum of the IDs' lengths."""
    picked: list[int] = []
    used = header_tokens
    for index in range(len(ids) - 1, -1, -1):
        size = len(ids[index])
        if size == 0:
            continue
        if used + size > room:
            break
        picked.append(index)
        used += size
    if not picked:
        return [], 0
    return picked[::-1], used
