"""Eigenvalue and trace estimators on a symmetric linear operator given only by its matvec (H·v).

Which eigenvalue: **the largest algebraic eigenvalue λ_max** (the sharpness). Gradient descent on a
quadratic is stable iff η < 2/λ_max; directions of negative curvature are descent directions, never a
step-size limit. arXiv 2602.04998 uses the largest eigenvalue too. Hessians at LoRA initialisation are
indefinite: with B = 0 the A–A block is zero and the A–B block is s·(∇_W L ⊗ I_r), so the eigenvalues
come in ± pairs near ±s·σ_i(∇_W L), each r-fold, shifted by the B–B block (our reading, checked on a
dense tiny Hessian). λ_max is therefore *not* the eigenvalue of largest magnitude in general, and |λ_min|
is within a few % of it — the worst case for power iteration.
`lanczos` returns λ_max directly (and the lowest Ritz value, an upper bound on λ_min, as a by-product);
`power` finds the dominant-magnitude eigenvalue first and, if that is negative, restarts on H − λ·I
to reach λ_max; `power_delta` is plain power iteration with the naive stop, kept as the benchmark's
baseline.

The stopping rules bound the true error. For a unit vector v and λ = vᵀHv, some eigenvalue of H lies
within the residual r = ‖Hv − λv‖ of λ (and within r²/gap once the spectral gap is known), so
`r ≤ tol·|λ|` is an honest stop. "λ changed by < tol" is not: near-degenerate top eigenvalues make
power iteration crawl, and a crawling estimate changes little while still far off. What no residual can
certify is that the nearby eigenvalue is the *top* one: inside LoRA's r-fold top cluster a Ritz value
may settle on a member just below λ_max (SmolLM2-135M: 0.4% low after 9 HVPs; see bench/RESULTS.md).

Every estimator counts iterations in operator applications (HVPs) and is deterministic given `seed`:
start vectors come from a CPU generator, so CPU and CUDA runs start from the same vector.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from advisor.errors import SpecError


class LinearOperator(Protocol):
    """What an estimator needs: a symmetric operator on flat vectors of length `dim`."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, vector: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """A symmetric matrix as a LinearOperator (tests, quadratics with a known spectrum)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.matvecs = 0

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        self.matvecs += 1
        return self.matrix @ vector


class DeflatedOperator:
    """P·H·P with P = I − VVᵀ: H with the (orthonormal) columns of V locked out.

    Used for top-k: Krylov spaces started in range(P) never leave it, so the locked eigenvalues cannot
    come back, whatever the signs of the remaining spectrum (Hotelling's H − λvvᵀ would leave a 0
    that outranks a negative remainder).
    """

    def __init__(self, operator: LinearOperator, locked: Sequence[torch.Tensor]) -> None:
        self.operator = operator
        self.dim, self.dtype, self.device = operator.dim, operator.dtype, operator.device
        self.locked = torch.stack(list(locked)) if locked else None

    def project(self, vector: torch.Tensor) -> torch.Tensor:
        if self.locked is None:
            return vector
        return vector - self.locked.T @ (self.locked @ vector)

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.project(self.operator.matvec(self.project(vector)))


@dataclass
class EigenEstimate:
    """One estimator's answer. `iterations` = operator applications (HVPs); `residual` = ‖Hv − λv‖ of
    the returned unit vector, so |λ − (nearest true eigenvalue)| ≤ residual."""

    estimator: str
    eigenvalue: float
    iterations: int
    residual: float
    converged: bool
    seconds: float
    eigenvalues: list[float] = field(default_factory=list)  # top-k, descending; [eigenvalue] for one
    history: list[float] = field(default_factory=list)  # the estimate after each iteration
    lowest_ritz: float | None = None  # Lanczos: lowest Ritz value, an upper bound on λ_min
    vector: torch.Tensor | None = field(default=None, repr=False)

    @property
    def relative_residual(self) -> float:
        return self.residual / abs(self.eigenvalue) if self.eigenvalue else float("inf")

    def to_dict(self, *, with_history: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data.pop("vector")
        if not with_history:
            data.pop("history")
        return data


@dataclass
class TraceEstimate:
    """Hutchinson's tr(H) ≈ mean of zᵀHz over Rademacher z, with its standard error."""

    trace: float
    std_error: float
    samples: int
    converged: bool  # std_error ≤ tol·|trace| (always True when no tol was asked for)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EigenEstimator(Protocol):
    def __call__(
        self, operator: LinearOperator, *, tol: float = ..., max_iter: int = ..., seed: int = ...
    ) -> EigenEstimate: ...


ESTIMATORS: dict[str, EigenEstimator] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_estimator(name: str) -> Callable[[EigenEstimator], EigenEstimator]:
    """Register an eigenvalue estimator under a lowercase, unique name (names arrive in requests)."""
    if not _NAME.match(name):
        raise ValueError(f"estimator name {name!r} must be lowercase letters, digits and underscores")
    if name in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is already registered")

    def add(function: EigenEstimator) -> EigenEstimator:
        ESTIMATORS[name] = function
        return function

    return add


def get_estimator(name: str) -> EigenEstimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise SpecError(
            "estimator",
            "unknown eigenvalue estimator",
            value=name,
            fix=f"choose one of {', '.join(ESTIMATORS)}",
        ) from None


def start_vector(dim: int, seed: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A unit Gaussian vector, the same on every device for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(dim, generator=generator, dtype=torch.float64)
    return (vector / vector.norm()).to(device=device, dtype=dtype)


def _start_in_range(operator: LinearOperator, seed: int) -> torch.Tensor:
    vector = start_vector(operator.dim, seed, dtype=operator.dtype, device=operator.device)
    if isinstance(operator, DeflatedOperator):
        vector = operator.project(vector)
        vector = vector / vector.norm()
    return vector


# 1. Lanczos ------------------------------------------------------------------------------------------


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    matrix = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


@register_estimator("lanczos")
def lanczos(
    operator: LinearOperator, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> EigenEstimate:
    """λ_max by Lanczos with full re-orthogonalisation (arXiv 2602.04998's estimator).

    Stops when the top Ritz pair (θ, y) has ‖Hy − θy‖ = β_k·|e_kᵀs| ≤ tol·|θ|, where s is θ's
    eigenvector in the tridiagonal T_k; the bound needs no extra HVP. Or when β_k ≈ 0: the Krylov space
    is invariant and θ is exact.
    """
    started = time.perf_counter()
    limit = min(max_iter, operator.dim)
    basis = [_start_in_range(operator, seed)]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    theta = residual = float("nan")
    ritz = torch.ones(1, dtype=torch.float64)
    converged = False
    for _ in range(limit):
        q = basis[-1]
        # 1. expand the Krylov space: w = H·q_k, α_k = q_kᵀ H q_k
        w = operator.matvec(q)
        alphas.append(float(q @ w))
        # 2. full re-orthogonalisation against every basis vector, twice ("twice is enough"): this also
        #    removes the α_k·q_k and β_{k−1}·q_{k−1} terms of the three-term recurrence
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        # 3. Ritz values of T_k; the top one's residual is β_k times the last entry of its eigenvector
        values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
        theta, ritz = float(values[-1]), vectors[:, -1]
        residual = beta * abs(float(ritz[-1]))
        history.append(theta)
        # 4. stop on the residual bound, or on an invariant subspace (β ≈ 0 relative to the spectrum)
        scale = max(abs(float(values[0])), abs(theta), 1e-30)
        if residual <= tol * abs(theta) or beta <= 1e-10 * scale:
            converged = True
            break
        basis.append(w / beta)
        betas.append(beta)
    stacked = torch.stack(basis[: len(alphas)])
    vector = stacked.T @ ritz.to(stacked.dtype).to(stacked.device)
    lowest = float(torch.linalg.eigvalsh(_tridiagonal(alphas, betas[: len(alphas) - 1]))[0])
    return EigenEstimate(
        "lanczos",
        theta,
        len(alphas),
        residual,
        converged,
        time.perf_counter() - started,
        [theta],
        history,
        lowest,
        vector / vector.norm(),
    )


# 2. Power iteration ------------------------------------------------------------------------------------


@dataclass
class _PowerRun:
    eigenvalue: float
    vector: torch.Tensor
    residual: float
    iterations: int
    converged: bool
    history: list[float]


def _power_loop(
    operator: LinearOperator, vector: torch.Tensor, *, shift: float, tol: float, max_iter: int, stop: str
) -> _PowerRun:
    """Power iteration on H − shift·I. Each iteration is one HVP; λ is the Rayleigh quotient of H."""
    history: list[float] = []
    eigenvalue = residual = float("nan")
    for iteration in range(1, max_iter + 1):
        # 1. w = (H − shift·I)·v and the Rayleigh quotient λ = vᵀHv (v is unit length)
        w = operator.matvec(vector) - shift * vector
        eigenvalue = float(vector @ w) + shift
        # 2. the residual of (λ, v) for H itself: ‖(H − shift)v − (λ − shift)v‖ = ‖Hv − λv‖
        residual = float((w - (eigenvalue - shift) * vector).norm())
        previous = history[-1] if history else None
        history.append(eigenvalue)
        # 3. the honest stop bounds the error; the naive one only says the estimate stopped moving
        if stop == "residual" and residual <= tol * abs(eigenvalue):
            return _PowerRun(eigenvalue, vector, residual, iteration, True, history)
        if stop == "delta" and previous is not None and abs(eigenvalue - previous) < tol * abs(eigenvalue):
            return _PowerRun(eigenvalue, vector, residual, iteration, True, history)
        norm = float(w.norm())
        if norm == 0.0:  # v lies in the null space of H − shift·I: λ = shift exactly
            return _PowerRun(eigenvalue, vector, 0.0, iteration, True, history)
        vector = w / norm
        if isinstance(operator, DeflatedOperator):
            vector = operator.project(vector)
            vector = vector / vector.norm()
    return _PowerRun(eigenvalue, vector, residual, max_iter, False, history)


@register_estimator("power")
def power(
    operator: LinearOperator, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> EigenEstimate:
    """λ_max by power iteration with the residual stop ‖Hv − λv‖ ≤ tol·|λ|.

    Power iteration converges to the eigenvalue of largest magnitude at the rate |λ₂/λ₁| per HVP;
    when that is negative, a second run on H − λ·I (whose spectrum is then ≥ 0, with λ_max − λ on top)
    finds λ_max. converged=False when max_iter HVPs (over both runs) did not meet the stop.
    """
    started = time.perf_counter()
    run = _power_loop(
        operator, _start_in_range(operator, seed), shift=0.0, tol=tol, max_iter=max_iter, stop="residual"
    )
    iterations, history = run.iterations, run.history
    if run.converged and run.eigenvalue < 0 and iterations < max_iter:
        shift = run.eigenvalue
        run = _power_loop(
            operator,
            _start_in_range(operator, seed + 1),
            shift=shift,
            tol=tol,
            max_iter=max_iter - iterations,
            stop="residual",
        )
        iterations, history = iterations + run.iterations, history + run.history
    elif run.eigenvalue < 0:  # out of budget on the negative side: λ_max was never reached
        run.converged = False
    return EigenEstimate(
        "power",
        run.eigenvalue,
        iterations,
        run.residual,
        run.converged,
        time.perf_counter() - started,
        [run.eigenvalue],
        history,
        None,
        run.vector,
    )


@register_estimator("power_delta")
def power_delta(
    operator: LinearOperator, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> EigenEstimate:
    """The naive baseline: power iteration that stops when λ changes by < tol relatively.

    Kept only so the benchmark can show what the residual stop buys; `converged` here means only
    "stopped moving", which near-degenerate spectra make a false claim.
    """
    started = time.perf_counter()
    run = _power_loop(
        operator, _start_in_range(operator, seed), shift=0.0, tol=tol, max_iter=max_iter, stop="delta"
    )
    return EigenEstimate(
        "power_delta",
        run.eigenvalue,
        run.iterations,
        run.residual,
        run.converged,
        time.perf_counter() - started,
        [run.eigenvalue],
        run.history,
        None,
        run.vector,
    )


# 3. Top-k by deflation, and the trace -----------------------------------------------------------------


def top_k_eigenvalues(
    operator: LinearOperator,
    k: int,
    *,
    estimator: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
) -> EigenEstimate:
    """The k largest eigenvalues (descending), one estimator run per eigenvalue on P·H·P with the
    eigenvectors already found locked out. `iterations` sums the HVPs of all runs, `residual` is the
    worst run's, `converged` holds only if every run converged."""
    if not 1 <= k <= operator.dim:
        raise ValueError(f"k must be between 1 and the dimension {operator.dim}, got {k}")
    started = time.perf_counter()
    find = get_estimator(estimator)
    found: list[EigenEstimate] = []
    locked: list[torch.Tensor] = []
    for index in range(k):
        estimate = find(DeflatedOperator(operator, locked), tol=tol, max_iter=max_iter, seed=seed + index)
        assert estimate.vector is not None
        vector = DeflatedOperator(operator, locked).project(estimate.vector)  # keep V exactly orthonormal
        locked.append(vector / vector.norm())
        found.append(estimate)
    values = [e.eigenvalue for e in found]
    return EigenEstimate(
        f"top{k}_{estimator}",
        values[0],
        sum(e.iterations for e in found),
        max(e.residual for e in found),
        all(e.converged for e in found),
        time.perf_counter() - started,
        values,
        [v for e in found for v in e.history],
        None,
        found[0].vector,
    )


def rademacher(
    dim: int, generator: torch.Generator, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    return (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(device=device, dtype=dtype)


def hutchinson_trace(
    operator: LinearOperator,
    *,
    samples: int = 100,
    tol: float | None = None,
    min_samples: int = 10,
    seed: int = 0,
) -> TraceEstimate:
    """tr(H) ≈ (1/m) Σ zᵢᵀHzᵢ with Rademacher zᵢ (E[zzᵀ] = I, so each term is unbiased).

    The variance of one term is 2·Σ_{i≠j} H_ij²: small for diagonally dominant H, large otherwise.
    With `tol`, stops early once the standard error ≤ tol·|mean| (after `min_samples`).
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = []
    std_error = float("inf")
    for _ in range(samples):
        probe = rademacher(operator.dim, generator, dtype=operator.dtype, device=operator.device)
        values.append(float(probe @ operator.matvec(probe)))
        if len(values) >= 2:
            mean = sum(values) / len(values)
            variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            std_error = math.sqrt(variance / len(values))
            if tol is not None and len(values) >= min_samples and std_error <= tol * abs(mean):
                break
    mean = sum(values) / len(values)
    converged = tol is None or std_error <= tol * abs(mean)
    return TraceEstimate(mean, std_error, len(values), converged, time.perf_counter() - started)
