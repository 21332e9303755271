"""The real run's loss forecast from shorter runs: L*(N) ∝ N^−α, anchored on the top rung."""

from __future__ import annotations

import math

import pytest

from advisor.science.loss_forecast import LOSS_EXPONENT, forecast_loss, loss_measurement


def test_from_the_top_rung_alone_the_loss_falls_along_the_prior_and_the_interval_widens_with_distance() -> (
    None
):
    anchor = loss_measurement(300, 2.0, 0.02)
    forecast = forecast_loss(anchor, [], 3000)
    assert forecast.loss == pytest.approx(2.0 * 10**LOSS_EXPONENT)  # a decade longer: ×10^−0.1
    assert forecast.low < forecast.loss < forecast.high
    at_anchor = forecast_loss(anchor, [], 300)
    assert at_anchor.loss == pytest.approx(2.0) and at_anchor.measured_at == []
    assert math.log10(forecast.high / forecast.low) > 2 * math.log10(at_anchor.high / at_anchor.low)
    assert "from the prior alone" in forecast.sentence()


def test_a_precise_longer_run_pins_the_exponent_and_narrows_the_forecast() -> None:
    # The truth: L* = 2.0 at 300 examples, falling as N^−0.3 (three times the prior's slope).
    def truth(examples: int) -> float:
        return 2.0 * (examples / 300) ** -0.3

    anchor = loss_measurement(300, truth(300), 0.01)
    measured = forecast_loss(anchor, [loss_measurement(1000, truth(1000), 0.01)], 3000)
    prior_only = forecast_loss(anchor, [], 3000)
    assert measured.exponent == pytest.approx(-0.3, abs=0.03)
    assert measured.low < truth(3000) < measured.high
    assert not prior_only.low < truth(3000) < prior_only.high  # the prior's slope is too shallow here
    assert measured.high / measured.low < prior_only.high / prior_only.low
    assert measured.measured_at == [1000] and "measured on 1000 examples" in measured.sentence()


def test_a_longer_run_that_scored_worse_by_noise_does_not_raise_the_forecast_above_the_top_rung() -> None:
    anchor = loss_measurement(300, 2.0, 0.05)
    noisy = forecast_loss(anchor, [loss_measurement(900, 2.1, 0.05)], 900)
    assert noisy.loss <= 2.0 and noisy.high > 2.0  # the rise is noise, but the interval still holds it
