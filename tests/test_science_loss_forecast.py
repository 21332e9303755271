"""The real run's loss forecast from shorter runs: L*(N) ∝ N^−α, anchored on the top rung."""

from __future__ import annotations

import math

import pytest

from advisor.science.loss_forecast import (
    LOSS_EXPONENT,
    SLOPE_DRIFT_SD,
    Z90,
    forecast_loss,
    loss_measurement,
)


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


def test_runs_shorter_than_the_top_rung_do_not_bend_the_forecast() -> None:
    # A trend run on a third of the top rung's examples, still in the loss's first fast drop.
    anchor = loss_measurement(300, 2.0, 0.02)
    with_short = forecast_loss(anchor, [loss_measurement(100, 2.6, 0.02)], 3000)
    assert with_short == forecast_loss(anchor, [], 3000) and with_short.measured_at == []


def test_a_measured_slope_is_trusted_less_the_further_past_its_longest_run_it_is_carried() -> None:
    anchor = loss_measurement(300, 2.0, 0.005)
    horizon = loss_measurement(600, 2.0 * 2**-0.2, 0.005)
    near, far = forecast_loss(anchor, [horizon], 600), forecast_loss(anchor, [horizon], 6000)
    assert near.exponent == pytest.approx(far.exponent)
    assert math.log10(far.high / far.low) > 2 * Z90 * SLOPE_DRIFT_SD * 0.95  # a decade past the horizon
    assert math.log10(near.high / near.low) < 2 * Z90 * SLOPE_DRIFT_SD / 2
