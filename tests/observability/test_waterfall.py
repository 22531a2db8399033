"""The waterfall: stages in order, "other" as the measured remainder, totals that add up."""

from __future__ import annotations

from genesis.observability import (
    Waterfall,
    begin_waterfall,
    current_waterfall,
    end_waterfall,
    request_stage,
    server_timing,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_other_is_what_no_stage_covered() -> None:
    clock = FakeClock()
    waterfall = Waterfall(clock)
    with waterfall.stage("auth"):
        clock.now += 0.002
    clock.now += 0.001  # a gap no stage covers
    waterfall.add_pipeline({"retrieve": 3.0, "token_cache": 1.0, "route": 0.5, "total": 99.0})
    clock.now += 0.0045  # the 4.5 ms the pipeline stages took
    stages = waterfall.finish()
    assert list(stages) == ["auth", "route", "retrieve", "token_cache", "other", "total"]
    assert stages["other"] == 1.0
    assert stages["total"] == 7.5
    assert sum(v for k, v in stages.items() if k != "total") == stages["total"]


def test_server_timing_header() -> None:
    header = server_timing({"auth": 0.1234, "total": 5.0})
    assert header == "auth;dur=0.123, total;dur=5.000"


def test_request_stage_is_a_no_op_outside_a_request() -> None:
    assert current_waterfall() is None
    with request_stage("embed"):
        pass
    waterfall, token = begin_waterfall()
    try:
        with request_stage("embed"):
            pass
        assert "embed" in waterfall.stages
    finally:
        end_waterfall(token)
    assert current_waterfall() is None
