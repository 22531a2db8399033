"""Costs from the price table in configuration."""

from __future__ import annotations

import logging

import pytest

from genesis.config import ModelPrice, load_settings
from genesis.events import PriceTable


def test_cost_per_million_tokens_with_a_cached_price() -> None:
    table = PriceTable(
        {"m": ModelPrice(input_per_1m=2.0, output_per_1m=8.0, cached_input_per_1m=0.5)}
    )
    cost = table.cost("m", prompt_tokens=1000, cached_tokens=600, completion=250)
    assert cost.priced
    assert cost.input_usd == pytest.approx(400 * 2.0 / 1e6)
    assert cost.cached_input_usd == pytest.approx(600 * 0.5 / 1e6)
    assert cost.output_usd == pytest.approx(250 * 8.0 / 1e6)
    assert cost.total_usd == pytest.approx(cost.input_usd + cost.cached_input_usd + cost.output_usd)


def test_without_a_cached_price_cached_tokens_cost_the_input_price() -> None:
    table = PriceTable({"m": ModelPrice(input_per_1m=1.0, output_per_1m=0.0)})
    assert table.cost("m", 1000, 999, 0).total_usd == pytest.approx(1000 / 1e6)


def test_an_unknown_model_costs_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = PriceTable({})
    with caplog.at_level(logging.WARNING, logger="genesis.events._pricing"):
        costs = [table.cost("ft:secret-model", 100, 0, 10) for _ in range(3)]
    assert all(c.total_usd == 0.0 and not c.priced for c in costs)
    assert table.unpriced == {"ft:secret-model": 3}
    assert caplog.text.count("no price for model") == 1


def test_pricing_comes_from_configuration() -> None:
    settings = load_settings(
        "dev",
        environ={},
        overrides={"pricing.gpt-x": {"input_per_1m": 3, "output_per_1m": 15}},
    )
    assert settings.pricing["gpt-x"].output_per_1m == 15
    assert settings.pricing["open-mistral-7b"].input_per_1m == 0.25  # from base.yaml
