"""Credential redaction for text that came from outside (upstream error bodies, vendor
exception messages) before it is logged.

Redaction is pattern-based, so it is a net, not a proof: the rule stays that such text never
goes to a client at all; it is only logged, and only through :func:`redact_excerpt`, which
redacts *before* truncating (a cut can shorten a key below what a pattern recognises) and
escapes line breaks (an upstream body must not forge log lines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "redact", "redact_excerpt"]

REDACTED = "***"
DEFAULT_EXCERPT_CHARS = 300
_PRECUT_FACTOR = 8
_MIN_KNOWN_CHARS = 6

_SECRET_NAMES = (
    r"api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token"
    r"|client[_-]?secret|secret|password|passwd|pwd|token"
)
_HEADER_NAMES = r"(?:proxy-)?authorization|x-api-key|api-key|cookie|set-cookie"

# (pattern, replacement), applied in order: whole header values first, so that the later,
# narrower patterns do not leave half of a header behind.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer x" in raw headers, or "authorization": "Bearer x" in echoed JSON.
    (
        re.compile(rf"(?i)(\b(?:{_HEADER_NAMES})[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}}]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{REDACTED}"),
    # scheme://user:password@host: keep the user, drop the password (up to the last "@",
    # since passwords hold "@" too).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^\s/?#]+@"), rf"\1{REDACTED}@"),
    # api_key=..., password=... in query strings and form bodies.
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9_-])((?:{_SECRET_NAMES})=)[^&\s\"']+"),
        rf"\1{REDACTED}",
    ),
    # "api_key": "...", 'password': '...' in JSON or Python reprs.
    (
        re.compile(rf"(?i)([\"'](?:{_SECRET_NAMES})[\"']\s*:\s*[\"'])[^\"']*"),
        rf"\1{REDACTED}",
    ),
    # Key shapes recognised without a label: OpenAI-style sk-..., Genesis' own gk_..., JWTs.
    (re.compile(r"\b(sk|gk)([-_])[A-Za-z0-9_-]{8,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``.

    ``known``: secrets the caller holds (its own API key), removed verbatim wherever they
    appear, labelled or not; values shorter than 6 characters are ignored (they would
    blank out ordinary words).
    """
    for secret in known:
        if len(secret) >= _MIN_KNOWN_CHARS:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_excerpt(text: str, limit: int = DEFAULT_EXCERPT_CHARS, known: Iterable[str] = ()) -> str:
    """Redacted, then cut to ``limit`` characters, on one line: safe to put in a log."""
    if not text:
        return "<empty>"
    total = len(text)
    if total > _PRECUT_FACTOR * limit:
        # Bound the regex work on a huge body; the run of characters cut in two is dropped
        # whole, so no fragment of a key too short to be recognised survives.
        text = re.sub(r"\S*$", "", text[: _PRECUT_FACTOR * limit])
    clean = redact(text, known)
    clean = clean.replace("\r", "\\r").replace("\n", "\\n")
    if len(clean) <= limit and len(text) == total:
        return clean
    return f"{clean[:limit]}... ({total} chars)"
