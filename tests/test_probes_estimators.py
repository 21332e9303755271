"""Eigenvalue and trace estimators against closed forms: quadratics whose spectrum we choose.

A quadratic ½θᵀHθ has Hessian H everywhere, so H = Q·diag(λ)·Qᵀ with a random orthogonal Q is a
Hessian with exactly the spectrum λ, and every answer below is known in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch

from advisor.errors import SpecError
from proxy_runs.probes.estimators import (
    ESTIMATORS,
    DenseOperator,
    get_estimator,
    hutchinson_trace,
    lanczos,
    power,
    power_delta,
    register_estimator,
    start_vector,
    top_k_eigenvalues,
)


def quadratic(eigenvalues: list[float], seed: int = 0) -> DenseOperator:
    """The Hessian of a quadratic with exactly these eigenvalues, in a random orthonormal basis."""
    generator = torch.Generator().manual_seed(seed)
    size = len(eigenvalues)
    basis, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return DenseOperator(basis @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ basis.T)


# λ_k = 1/k: a decaying spectrum like a trained network's, top gap 0.5
HARMONIC = [1.0 / k for k in range(1, 61)]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_registered_estimator_finds_lambda_max_of_a_well_separated_quadratic(name: str) -> None:
    estimate = get_estimator(name)(quadratic(HARMONIC), tol=1e-6, max_iter=200, seed=0)

    assert estimate.converged
    assert estimate.eigenvalue == pytest.approx(1.0, rel=1e-5)
    assert 0 < estimate.iterations <= 200
    assert estimate.vector is not None and estimate.vector.norm() == pytest.approx(1.0)
    assert estimate.to_dict()["eigenvalue"] == estimate.eigenvalue  # JSON-ready, without the vector
    assert "vector" not in estimate.to_dict()


def test_lanczos_error_is_bounded_by_its_residual_and_needs_few_hvps() -> None:
    estimate = lanczos(quadratic(HARMONIC), tol=1e-3)

    assert estimate.converged and estimate.residual <= 1e-3 * estimate.eigenvalue
    assert abs(estimate.eigenvalue - 1.0) <= estimate.residual  # the residual bounds the true error
    assert estimate.iterations <= 15
    assert estimate.history[-1] == estimate.eigenvalue and len(estimate.history) == estimate.iterations


def test_lanczos_is_exact_once_the_krylov_space_is_the_whole_space() -> None:
    operator = quadratic([3.0, -1.0, 0.5, 2.0])

    estimate = lanczos(operator, tol=1e-12, max_iter=50)

    assert estimate.converged and estimate.iterations <= 4
    assert estimate.eigenvalue == pytest.approx(3.0, rel=1e-12)
    assert estimate.lowest_ritz == pytest.approx(-1.0, rel=1e-10)


def test_indefinite_hessians_report_the_largest_algebraic_eigenvalue_not_the_largest_magnitude() -> None:
    # At LoRA initialisation |λ_min| can exceed λ_max; the sharpness is still λ_max.
    operator = quadratic([0.8, 0.3, 0.1, -0.2, -1.2] + [0.01] * 20)

    by_lanczos = lanczos(operator, tol=1e-8, max_iter=100)
    by_power = power(operator, tol=1e-8, max_iter=2000)
    by_naive = power_delta(operator, tol=1e-8, max_iter=2000)

    assert by_lanczos.eigenvalue == pytest.approx(0.8, rel=1e-7)
    assert by_lanczos.lowest_ritz == pytest.approx(-1.2, rel=1e-6)
    assert by_power.converged and by_power.eigenvalue == pytest.approx(0.8, rel=1e-6)
    assert by_naive.eigenvalue == pytest.approx(-1.2, rel=1e-6)  # the baseline finds |λ|-dominant


def test_top_k_by_deflation_returns_the_leading_eigenvalues_in_order() -> None:
    operator = quadratic(HARMONIC)

    for estimator in ("lanczos", "power"):
        estimate = top_k_eigenvalues(operator, 3, estimator=estimator, tol=1e-8, max_iter=500)
        assert estimate.converged, estimator
        assert estimate.eigenvalues == pytest.approx([1.0, 1 / 2, 1 / 3], rel=1e-6), estimator


def test_top_k_deflation_survives_a_negative_remainder() -> None:
    # After locking 2.0 the rest is negative: a Hotelling deflation would return the spurious 0.
    estimate = top_k_eigenvalues(quadratic([2.0, -0.5, -1.0, -3.0]), 2, tol=1e-10)

    assert estimate.eigenvalues == pytest.approx([2.0, -0.5], rel=1e-8)


def test_near_degenerate_top_eigenvalues_make_power_iteration_admit_it_has_not_converged() -> None:
    # λ₁ = 1.0, λ₂ = 0.9999 and a bulk reaching up to 0.99: power iteration crawls at 0.99 per HVP.
    spectrum = [1.0, 0.9999, *torch.linspace(0.99, 0.0, 58).tolist()]
    operator = quadratic(spectrum)

    honest = power(operator, tol=1e-3, max_iter=30)
    naive = power_delta(operator, tol=1e-3, max_iter=300)
    krylov = lanczos(operator, tol=1e-3, max_iter=100)

    assert not honest.converged and honest.iterations == 30
    assert honest.residual > 1e-3 * honest.eigenvalue
    # the naive stop claims convergence while more than `tol` away from λ_max
    assert naive.converged and abs(naive.eigenvalue - 1.0) > 1e-3
    # Lanczos resolves it, within the bound it reports
    assert krylov.converged and abs(krylov.eigenvalue - 1.0) <= krylov.residual


def test_hutchinson_trace_is_exact_on_a_diagonal_and_within_its_standard_error_otherwise() -> None:
    diagonal = DenseOperator(torch.diag(torch.tensor(HARMONIC, dtype=torch.float64)))
    exact = hutchinson_trace(diagonal, samples=5)
    assert exact.trace == pytest.approx(sum(HARMONIC), rel=1e-12) and exact.std_error == pytest.approx(0.0)

    operator = quadratic(HARMONIC, seed=3)
    estimate = hutchinson_trace(operator, samples=400, seed=1)
    # Var(zᵀHz) = 2·Σ_{i≠j} H_ij² for Rademacher z: the standard error has a closed form too
    off_diagonal = operator.matrix - torch.diag(torch.diag(operator.matrix))
    expected_error = math.sqrt(2 * float(off_diagonal.pow(2).sum()) / 400)
    assert abs(estimate.trace - sum(HARMONIC)) <= 4 * expected_error
    assert 0.7 * expected_error <= estimate.std_error <= 1.3 * expected_error


def test_hutchinson_stops_early_at_the_requested_relative_standard_error() -> None:
    estimate = hutchinson_trace(quadratic(HARMONIC, seed=3), samples=10_000, tol=0.05, seed=0)

    assert estimate.converged and estimate.samples < 10_000
    assert estimate.std_error <= 0.05 * abs(estimate.trace)


def test_estimates_are_deterministic_given_the_seed_and_differ_across_seeds() -> None:
    operator = quadratic(HARMONIC)

    assert lanczos(operator, seed=7).history == lanczos(operator, seed=7).history
    assert lanczos(operator, seed=7).history != lanczos(operator, seed=8).history
    assert torch.equal(
        start_vector(10, 1, dtype=torch.float32, device=torch.device("cpu")),
        start_vector(10, 1, dtype=torch.float32, device=torch.device("cpu")),
    )


def test_unknown_estimator_names_fail_with_the_field_and_the_choices() -> None:
    with pytest.raises(SpecError) as caught:
        get_estimator("arnoldi")

    assert caught.value.field == "estimator"
    assert "lanczos" in str(caught.value) and "arnoldi" in str(caught.value)


def test_registry_rejects_bad_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        register_estimator("Lanczos")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("lanczos")
