"""What reading a request costs the event loop: the router's rules, joined against one by one.

    python benchmarks/router_read.py --json out.json

A request up to ``INLINE_READ_CHARS`` long is read on the event loop (`HALORouter._read`:
pasted code left out, the cards' rules matched, the bag of terms for the intent classifier).
This times, in one process and in alternating rounds, the rules of the six default cards
matched as `CompiledRules` does (each card's keywords and patterns as one alternation first)
against every rule tried alone, and the whole read, on the 1,115 labelled routing tasks (as
written: mostly questions) and on requests of INLINE_READ_CHARS characters (two tasks
repeated). Both matchers must find the same hits. Writes microseconds per request (medians
of the rounds) and the ratios:

    {"tasks": {"joined_us", "one_by_one_us", "read_us", "ratio"},
     "long": {...}, "rounds", "same_hits": true}
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genesis.config import load_settings
from genesis.router import cards_from_profiles
from genesis.router._intent import PACKAGED_EXAMPLES, bag_of_terms, load_examples
from genesis.router._request import read_request, request_text
from genesis.router._router import INLINE_READ_CHARS
from genesis.router._rules import CompiledRules, RuleHit, keyword_regex

ROUNDS = 7


def one_by_one(cards: Sequence[Any]) -> Callable[[str, str], list[RuleHit]]:
    """The matcher before the rules were joined: every keyword and pattern alone."""
    compiled = [
        (
            card.name,
            [(k, keyword_regex(k)) for k in card.keywords],
            [(p, re.compile(p, re.IGNORECASE | re.MULTILINE)) for p in card.patterns],
        )
        for card in cards
    ]

    def match(task: str, request: str) -> list[RuleHit]:
        hits = []
        for agent, keywords, patterns in compiled:
            kws = tuple(k for k, rx in keywords if rx.search(request))
            pats = tuple(p for p, rx in patterns if rx.search(task))
            if kws or pats:
                hits.append(RuleHit(agent, kws, pats))
        return hits

    return match


def per_request_us(fn: Callable[[str, str], object], pairs: Sequence[tuple[str, str]]) -> float:
    began = time.perf_counter()
    for task, request in pairs:
        fn(task, request)
    return (time.perf_counter() - began) / len(pairs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings("dev", environ={})
    cards = cards_from_profiles(settings.agents.values())
    joined, alone = CompiledRules(cards).match, one_by_one(cards)
    tasks = [t for t, _ in load_examples(PACKAGED_EXAMPLES, list(settings.agents))]
    long_text = " ".join(tasks[:40])[:INLINE_READ_CHARS]
    sets = {
        "tasks": [(t, request_text(t)) for t in tasks],
        "long": [(long_text, request_text(long_text))] * 200,
    }
    same = all(joined(t, r) == alone(t, r) for pairs in sets.values() for t, r in pairs)

    def read(task: str, request: str) -> object:
        # What HALORouter._read does on the loop, with the joined rules.
        request, code = read_request(task)
        return joined(task, request), bag_of_terms(request, code)

    out: dict[str, Any] = {"rounds": ROUNDS, "same_hits": same}
    for name, pairs in sets.items():
        times: dict[str, list[float]] = {"joined_us": [], "one_by_one_us": [], "read_us": []}
        for _ in range(ROUNDS):
            times["joined_us"].append(per_request_us(joined, pairs))
            times["one_by_one_us"].append(per_request_us(alone, pairs))
            times["read_us"].append(per_request_us(read, pairs))
        row = {k: round(statistics.median(v), 1) for k, v in times.items()}
        row["ratio"] = round(row["one_by_one_us"] / row["joined_us"], 2)
        row["chars"] = max(len(t) for t, _ in pairs)
        out[name] = row
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if not same:
        raise SystemExit("the joined rules and the rules one by one found different hits")


if __name__ == "__main__":
    main()
