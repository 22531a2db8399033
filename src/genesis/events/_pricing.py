"""What a request cost, from the price table in configuration (``pricing:``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from genesis.config import ModelPrice

logger = logging.getLogger(__name__)
_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Cost:
    """One request's bill. ``prompt_tokens`` are the prompt tokens billed (the backend's own
    count when it gave one), of which ``cached_tokens`` at the cached-input price; ``priced``
    is False when the model is missing from the price table (then every amount is 0)."""

    model: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    input_usd: float
    cached_input_usd: float
    output_usd: float
    total_usd: float
    priced: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PriceTable:
    """Prices per model name. An unknown model costs 0: it is logged the first time and
    counted in :attr:`unpriced` (model -> requests), so a missing price is visible."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._lock = threading.Lock()
        self.unpriced: dict[str, int] = {}

    def cost(self, model: str, prompt_tokens: int, cached_tokens: int, completion: int) -> Cost:
        price = self._prices.get(model)
        cached = min(max(cached_tokens, 0), prompt_tokens)
        if price is None:
            self._count_unpriced(model)
            return Cost(model, prompt_tokens, cached, completion, 0.0, 0.0, 0.0, 0.0, False)
        cached_rate = (
            price.input_per_1m if price.cached_input_per_1m is None else (price.cached_input_per_1m)
        )
        fresh_usd = (prompt_tokens - cached) * price.input_per_1m / _PER
        cached_usd = cached * cached_rate / _PER
        output_usd = completion * price.output_per_1m / _PER
        total = fresh_usd + cached_usd + output_usd
        return Cost(
            model, prompt_tokens, cached, completion, fresh_usd, cached_usd, output_usd, total, True
        )

    def _count_unpriced(self, model: str) -> None:
        with self._lock:
            first = model not in self.unpriced
            self.unpriced[model] = self.unpriced.get(model, 0) + 1
        if first:
            logger.warning("no price for model %r in pricing: its requests cost 0", model)
