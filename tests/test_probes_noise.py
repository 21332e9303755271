"""The gradient noise scale B_simple = tr(Σ)/|G|² on problems where both are known exactly."""

from __future__ import annotations

import json

import pytest
import torch

from proxy_runs.probes.noise import gradient_noise_scale


def population_with_moments(
    mean: torch.Tensor, covariance_diagonal: torch.Tensor, size: int, seed: int = 0
) -> torch.Tensor:
    """`size` per-example gradients whose population mean and covariance are exactly the given ones."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(size, len(mean), generator=generator, dtype=torch.float64)
    noise -= noise.mean(0)
    # whiten: the sample covariance (1/N convention) of `noise` becomes exactly the identity
    covariance = noise.T @ noise / size
    noise = noise @ torch.linalg.inv(torch.linalg.cholesky(covariance)).T
    return mean + noise * covariance_diagonal.sqrt()


def mean_gradient_of(population: torch.Tensor):
    return lambda indices: population[list(indices)].mean(0)


def test_b_simple_recovers_the_true_noise_scale_and_its_interval_covers_it() -> None:
    mean = torch.full((16,), 0.25, dtype=torch.float64)  # |G|² = 1
    variances = torch.linspace(0.2, 1.8, 16, dtype=torch.float64)  # tr(Σ) = 16
    population = population_with_moments(mean, variances, 20_000)
    truth = float(variances.sum() / mean.pow(2).sum())  # B_simple = 16 examples

    result = gradient_noise_scale(
        mean_gradient_of(population), len(population), small_batch=4, big_batch=32, draws=200, seed=0
    )

    assert result.resolved and result.b_simple is not None
    low, high = result.interval
    assert low is not None and high is not None and low <= truth <= high
    assert result.b_simple == pytest.approx(truth, rel=0.1)
    assert high / low < 1.6  # 200 draws pin it down to a usable interval
    assert result.grad_norm_sq == pytest.approx(1.0, rel=0.1)
    assert result.trace_sigma == pytest.approx(16.0, rel=0.05)
    json.dumps(result.to_dict())


def test_more_draws_narrow_the_interval() -> None:
    population = population_with_moments(
        torch.full((8,), 0.5, dtype=torch.float64), torch.ones(8, dtype=torch.float64), 5_000, seed=1
    )
    gradient_of = mean_gradient_of(population)

    few = gradient_noise_scale(gradient_of, len(population), small_batch=2, big_batch=16, draws=20, seed=3)
    many = gradient_noise_scale(gradient_of, len(population), small_batch=2, big_batch=16, draws=320, seed=3)

    assert None not in few.interval and None not in many.interval
    assert many.interval[1] - many.interval[0] < (few.interval[1] - few.interval[0]) / 2  # type: ignore[operator]


def test_a_gradient_drowned_in_noise_has_no_finite_upper_bound() -> None:
    no_signal, unit_noise = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    population = population_with_moments(no_signal, unit_noise, 5_000, seed=2)

    result = gradient_noise_scale(
        mean_gradient_of(population), len(population), small_batch=2, big_batch=8, draws=40, seed=0
    )

    assert result.interval[1] is None  # |G|² ≤ 0 is within the interval: any batch size is "critical"
    assert json.loads(json.dumps(result.to_dict()))["interval"][1] is None


@pytest.mark.parametrize(("small", "big", "n"), [(4, 4, 100), (4, 10, 100), (4, 16, 8), (0, 8, 100)])
def test_batch_sizes_must_be_nested_and_available(small: int, big: int, n: int) -> None:
    with pytest.raises(ValueError):
        gradient_noise_scale(lambda indices: torch.zeros(2), n, small_batch=small, big_batch=big, draws=2)
