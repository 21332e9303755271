"""λ_max at LoRA's initialisation from the block structure of its Hessian: the `lora_block` estimator.

At B = 0 the loss L(A, B) = ℓ(W + s·B·A) of one adapted layer has, in (A, B) coordinates, the Hessian

    H = [[0, C], [Cᵀ, D]],   C·y = s·yᵀG (in A's space),   Cᵀ·x = s·G·xᵀ (in B's space),

where G = ∂ℓ/∂W is the gradient of the *frozen* weight and D = H_BB = s²·(·A)ᵀ∇²_W ℓ(·A). The A–A block is
zero (every path to it goes through B), and the cross block is exactly G: no Hessian is needed to know it.
With D = 0 the eigenvalues would be ±s·σᵢ(G), each r-fold: the near ± pairs and the r-fold top cluster
that make Lanczos and power iteration slow (issue 34: the lowest Ritz value within 1–6% of −λ_max).
Several adapted layers stack the same way: C is block-diagonal (one G per layer), D couples them.

For λ ≠ 0, eliminating A (x = C·y/λ) leaves the eigenproblem in B's space alone:

    λ·y = K(λ)·y,   K(λ) = P/λ + D,   P = CᵀC = s²·(G·Gᵀ ⊗ I_r).

P is known exactly from one gradient; only D costs Hessian-vector products. For λ > 0, μ_max(K(λ)) − λ is
strictly decreasing, so λ_max is its one positive root, and every other positive eigenvalue lies below it.
The estimator keeps D·q for each basis vector q of a subspace Q (one HVP each), solves the projected scalar
equation λ = μ_max(QᵀK(λ)Q) exactly (bisection on a k × k problem, no HVP), and grows Q by the residual of
K(λ) at the answer, preconditioned by (P/λ − λ)⁻¹ (Davidson's correction, exact because P is known; it
resolves the r-fold top cluster that D splits), at one HVP each. The answers are lower bounds of λ_max that
rise with Q; the ± tie is gone (the negative half of the spectrum never enters); and the start vector u₁·cᵀ
already lies in the top cluster (u₁: G's top left singular vector).

The stop: for z = [C·y/λ; y], (H − λ)·z = [0; K(λ)·y − λ·y], so the full problem's residual costs no HVP,
and an eigenvalue of H lies within it. As with Lanczos, no residual certifies that this eigenvalue is the
top of a tight cluster; the preconditioned expansion is what reaches the top one
(tests/test_probes_lora_block.py checks it against Lanczos run to a 1e-7 residual). The first HVP also
checks the structure: its A part must be s·qᵀG; if not (a method whose forward is not W + s·B·A), the
estimator falls back to Lanczos.
Operator applications counted: the gradient, then one per HVP.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from proxy_runs.probes.estimators import EigenEstimate, LinearOperator, lanczos, register_estimator
from proxy_runs.probes.hvp import HessianOperator
from proxy_runs.probes.modules import ModuleGroup

STRUCTURE_TOLERANCE = 1e-3  # relative mismatch of the first HVP's A part above which the structure is wrong
ROOT_STEPS = 200  # bisection steps for the projected scalar equation (k × k eigenproblems: microseconds)
# The expansion's preconditioner divides by (s²σᵢ²/λ − λ), which vanishes on the top cluster; dividing by at
# least this share of λ amplifies the cluster's components up to 1,000× over the rest (measured: 1e-2 left
# tiny-model modules inside the cluster, 2e-3 low, as often as plain residuals did).
PRECONDITIONER_FLOOR = 1e-3


@dataclass
class LoraPiece:
    """One adapted layer at B = 0: where its A (r × d_in) and B (d_out × r) sit in the flat vector, its
    scale s, and the frozen weight whose gradient G (d_out × d_in) is the cross block."""

    a_slice: slice
    b_slice: slice
    rank: int
    d_in: int
    d_out: int
    scale: float
    weight: nn.Parameter = field(repr=False)
    transposed: bool  # GPT-2's Conv1D stores W as d_in × d_out (PEFT's fan_in_fan_out)


class LoraBlockOperator:
    """A HessianOperator over the A and B of LoRA layers at B = 0, with what the `lora_block` estimator needs
    to use their structure. Its matvec is the operator's own; G is computed on first use (one gradient)."""

    def __init__(self, operator: HessianOperator, pieces: list[LoraPiece]) -> None:
        self.operator = operator
        self.pieces = pieces
        self.dim, self.dtype, self.device = operator.dim, operator.dtype, operator.device
        self._gradients: list[torch.Tensor] | None = None

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.operator.matvec(vector)

    def weight_gradients(self) -> list[torch.Tensor]:
        """G of every piece (d_out × d_in), from one gradient over the frozen weights."""
        if self._gradients is None:
            weights = [piece.weight for piece in self.pieces]
            for weight in weights:
                weight.requires_grad_(True)
            try:
                frozen = HessianOperator(weights, self.operator.batches, self.operator.loss_fn)
                flat = frozen.gradient()
            finally:
                for weight in weights:
                    weight.requires_grad_(False)
            self.operator.stats.gradients += frozen.stats.gradients
            self.operator.stats.gradient_seconds += frozen.stats.gradient_seconds
            pieces = flat.split([w.numel() for w in weights])
            self._gradients = [
                (g.view(w.shape).T if p.transposed else g.view(w.shape)).to(self.dtype)
                for g, w, p in zip(pieces, weights, self.pieces, strict=True)
            ]
        return self._gradients


def lora_pieces(group_list: list[ModuleGroup], model: nn.Module) -> list[LoraPiece] | None:
    """The pieces when every group is a LoRA layer whose only trainable parameters are one adapter's A and B
    with B = 0 (LoRA, rsLoRA, LoRA+ at initialisation); None otherwise (PiSSA and OLoRA start with B ≠ 0,
    DoRA adds a magnitude, full fine-tuning has no A and B): those are probed by plain Lanczos."""
    modules = dict(model.named_modules())
    pieces: list[LoraPiece] = []
    offset = 0
    for group in group_list:
        owner = group.param_names[0].rsplit(".lora_", 1)[0] if group.param_names else ""
        module = modules.get(owner)
        if not isinstance(module, LoraLayer) or len(group.params) != 2:
            return None
        a_name, b_name = (name.rsplit(".", 3)[-3:] for name in group.param_names)
        if a_name[0] != "lora_A" or b_name[0] != "lora_B" or a_name[1] != b_name[1]:
            return None
        adapter = a_name[1]
        a, b = group.params
        weight = getattr(module.get_base_layer(), "weight", None)
        if not isinstance(weight, nn.Parameter) or bool(b.detach().abs().max() > 0):
            return None
        transposed = bool(getattr(module, "fan_in_fan_out", False))
        d_out, d_in = (weight.shape[1], weight.shape[0]) if transposed else tuple(weight.shape)
        if a.shape != (a.shape[0], d_in) or b.shape != (d_out, a.shape[0]):
            return None
        rank = a.shape[0]
        pieces.append(
            LoraPiece(
                a_slice=slice(offset, offset + a.numel()),
                b_slice=slice(offset + a.numel(), offset + a.numel() + b.numel()),
                rank=rank,
                d_in=d_in,
                d_out=d_out,
                scale=float(module.scaling[adapter]),
                weight=weight,
                transposed=transposed,
            )
        )
        offset += a.numel() + b.numel()
    return pieces


def with_lora_block(operator: HessianOperator, groups: list[ModuleGroup], model: nn.Module) -> LinearOperator:
    """The operator with its LoRA structure attached when the groups have it (their parameters, in order, are
    the operator's); the plain operator otherwise."""
    if [id(p) for g in groups for p in g.params] != [id(p) for p in operator.params]:
        return operator
    pieces = lora_pieces(groups, model)
    return LoraBlockOperator(operator, pieces) if pieces else operator


# The estimator --------------------------------------------------------------------------------------------


class _Schur:
    """P and D in B's space (the concatenated B parts), from the pieces' gradients and HVPs."""

    def __init__(self, operator: LoraBlockOperator) -> None:
        self.operator = operator
        self.pieces = operator.pieces
        self.gradients = operator.weight_gradients()
        starts = list(itertools.accumulate((p.d_out * p.rank for p in self.pieces), initial=0))
        self.b_dim = starts[-1]
        self.b_parts = [slice(start, end) for start, end in itertools.pairwise(starts)]  # each piece's B in y
        # (U, σ) of every piece's G: P's eigenvectors are U's columns ⊗ I_r, its eigenvalues s²σ²
        self.singular_pairs = [self._singular_pair(g) for g in self.gradients]

    @staticmethod
    def _singular_pair(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, sigma, _ = torch.linalg.svd(g.double(), full_matrices=False)
        return u.to(g.dtype), sigma.to(g.dtype)

    def apply_p(self, y: torch.Tensor) -> torch.Tensor:
        """P·y = s²·G·Gᵀ·y per piece, with y's piece viewed as d_out × r."""
        parts = []
        for piece, g, part in zip(self.pieces, self.gradients, self.b_parts, strict=True):
            block = y[part].view(piece.d_out, piece.rank)
            parts.append((piece.scale**2 * (g @ (g.T @ block))).reshape(-1))
        return torch.cat(parts)

    def hvp_of_b(self, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(D·y, the relative mismatch of the HVP's A part from C·y = s·yᵀG): one HVP."""
        full = torch.zeros(self.operator.dim, dtype=self.operator.dtype, device=self.operator.device)
        for piece, part in zip(self.pieces, self.b_parts, strict=True):
            full[piece.b_slice] = y[part]
        product = self.operator.matvec(full)
        mismatch, scale = 0.0, 0.0
        for piece, g, part in zip(self.pieces, self.gradients, self.b_parts, strict=True):
            expected = piece.scale * (y[part].view(piece.d_out, piece.rank).T @ g).reshape(-1)
            mismatch += float((product[piece.a_slice] - expected).norm()) ** 2
            scale += float(expected.norm()) ** 2
        d_y = torch.cat([product[piece.b_slice] for piece in self.pieces])
        return d_y, math.sqrt(mismatch / scale) if scale > 0 else math.inf

    def precondition(self, residual: torch.Tensor, root: float) -> torch.Tensor:
        """(P/λ − λ·I)⁻¹ applied to the residual, exactly (P is known): Davidson's correction.

        On the top cluster u₁ ⊗ ℝʳ the denominator is small, so what the residual says *inside* the cluster
        (where D splits the r-fold s·σ₁) outweighs the coupling to the rest. Plain residuals spend their
        HVPs on that coupling and can settle on a lower member of the cluster (tiny Llama: 0.2% low, with a
        residual under 1e-3)."""
        parts = []
        for piece, (u, sigma), part in zip(self.pieces, self.singular_pairs, self.b_parts, strict=True):
            block = residual[part].view(piece.d_out, piece.rank)
            along = u.T @ block
            denominator = piece.scale**2 * sigma**2 / root - root
            floor = PRECONDITIONER_FLOOR * root
            denominator = torch.where(
                denominator.abs() < floor, torch.where(denominator < 0, -floor, floor), denominator
            )
            inside = u @ (along / denominator[:, None])
            outside = (block - u @ along) / (-root)  # P = 0 off G's column space
            parts.append((inside + outside).reshape(-1))
        return torch.cat(parts)

    def start(self, seed: int) -> tuple[torch.Tensor, float]:
        """(u₁·cᵀ in the piece with the largest s·σ₁, random c; that s·σ₁): in P's top eigenvector cluster."""
        tops = [
            piece.scale * float(sigma[0])
            for piece, (_, sigma) in zip(self.pieces, self.singular_pairs, strict=True)
        ]
        best = max(range(len(tops)), key=tops.__getitem__)
        piece, (u, _) = self.pieces[best], self.singular_pairs[best]
        c = torch.randn(piece.rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        y = torch.zeros(self.b_dim, dtype=torch.float64)
        y[self.b_parts[best]] = torch.outer(u[:, 0].double().cpu(), c).reshape(-1)
        return (y / y.norm()).to(self.operator.device, self.operator.dtype), tops[best]


def projected_root(p_k: torch.Tensor, d_k: torch.Tensor, upper_p: float) -> tuple[float, torch.Tensor]:
    """The positive root of λ = μ_max(P_k/λ + D_k) and its unit eigenvector w (k × k, float64).

    g(λ) = μ_max(P_k/λ + D_k) − λ decreases strictly for λ > 0; it is ≤ 0 at the root of
    upper_p/λ + μ_max(D_k) = λ (upper_p ≥ μ_max(P_k)) and > 0 near 0 when P_k ≠ 0: bisect in between."""
    d_top = max(float(torch.linalg.eigvalsh(d_k)[-1]), 0.0)
    high = (d_top + math.sqrt(d_top**2 + 4 * upper_p)) / 2
    low = 0.0
    for _ in range(ROOT_STEPS):
        middle = (low + high) / 2
        if middle <= 0 or high - low <= 1e-15 * high:
            break
        if float(torch.linalg.eigvalsh(p_k / middle + d_k)[-1]) > middle:
            low = middle
        else:
            high = middle
    root = (low + high) / 2
    return root, torch.linalg.eigh(p_k / root + d_k)[1][:, -1]


@register_estimator("lora_block")
def lora_block(
    operator: LinearOperator, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> EigenEstimate:
    """λ_max at LoRA's initialisation through the Schur complement in B's space (see the module docstring);
    plain Lanczos when the operator carries no LoRA structure or the structure check fails."""
    if not isinstance(operator, LoraBlockOperator):
        return lanczos(operator, tol=tol, max_iter=max_iter, seed=seed)
    started = time.perf_counter()
    schur = _Schur(operator)
    q, top_cross = schur.start(seed)
    if top_cross <= 0:  # G = 0: the loss does not reach these layers; Lanczos handles H = diag(0, D)
        return lanczos(operator.operator, tol=tol, max_iter=max_iter, seed=seed)
    basis: list[torch.Tensor] = []
    d_products: list[torch.Tensor] = []
    p_products: list[torch.Tensor] = []
    history = [top_cross]  # after the gradient: s·σ₁, λ_max with D left out
    root, residual, y, converged = top_cross, math.inf, q, False
    for _ in range(max(1, max_iter - 1)):
        d_q, mismatch = schur.hvp_of_b(q)
        if not basis and mismatch > STRUCTURE_TOLERANCE:  # not W + s·B·A after all
            return lanczos(operator.operator, tol=tol, max_iter=max_iter, seed=seed)
        basis.append(q)
        d_products.append(d_q)
        p_products.append(schur.apply_p(q))
        # 1. the projected problem: λ = μ_max(QᵀPQ/λ + QᵀDQ), exactly, in float64
        stacked, p_stacked, d_stacked = (torch.stack(v, 1) for v in (basis, p_products, d_products))
        p_k = (stacked.T @ p_stacked).double()
        d_k = (stacked.T @ d_stacked).double()
        p_k, d_k = (p_k + p_k.T) / 2, (d_k + d_k.T) / 2
        root, w = projected_root(p_k.cpu(), d_k.cpu(), top_cross**2)
        history.append(root)
        # 2. the full problem's residual at z = [C·y/λ; y]: ‖K(λ)y − λy‖ / ‖z‖, with ‖C·y‖² = wᵀP_k w
        w = w.to(stacked.device, stacked.dtype)
        y = stacked @ w
        step = p_stacked @ w / root + d_stacked @ w - root * y
        residual = float(step.norm()) / math.sqrt(
            1.0 + float(w.double() @ p_k.to(w.device) @ w.double()) / root**2
        )
        if residual <= tol * root:
            converged = True
            break
        # 3. grow the subspace by the residual (orthogonalised twice); an invariant subspace is exact
        step = schur.precondition(step, root)
        for _ in range(2):
            step = step - stacked @ (stacked.T @ step)
        norm = float(step.norm())
        if norm <= 1e-12 * float(y.norm()):
            converged = True
            break
        q = step / norm
    vector = _full_vector(schur, y, root)
    return EigenEstimate(
        "lora_block",
        root,
        1 + len(basis),  # the gradient, and one HVP per basis vector
        residual,
        converged,
        time.perf_counter() - started,
        [root],
        history,
        None,
        vector,
    )


def _full_vector(schur: _Schur, y: torch.Tensor, root: float) -> torch.Tensor:
    """z = [C·y/λ; y] in the operator's flat layout, unit length."""
    z = torch.zeros(schur.operator.dim, dtype=y.dtype, device=y.device)
    for piece, g, part in zip(schur.pieces, schur.gradients, schur.b_parts, strict=True):
        block = y[part].view(piece.d_out, piece.rank)
        z[piece.a_slice] = (piece.scale * (block.T @ g)).reshape(-1) / root
        z[piece.b_slice] = y[part]
    return z / z.norm()
