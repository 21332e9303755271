"""The balanced factorisation of LoRA pairs: BaLoRA projects onto it, RefLoRA preconditions towards it.

For a pair (A, B) with A r × in and B out × r (PEFT's shapes), every (PᵀA, B·P⁻ᵀ) with P invertible has
the same product B·A. RefLoRA's closed form (arXiv 2505.18877) picks

    eigh(AAᵀ) = V_A Σ_A² V_Aᵀ,  M = B V_A Σ_A,  eigh(MᵀM) = V_M Σ_M² V_Mᵀ,  P = V_A Σ_A⁻¹ V_M Σ_M^½,

after which A'A'ᵀ = B'ᵀB' = Σ_M: BaLoRA's balanced point (arXiv 2605.31484; science.md §3–4). BaLoRA's paper
reaches it through thin SVDs of A and B; here both methods use the form above, where every decomposition
is of an r × r matrix (MᵀM is formed from the r × r Gram BᵀB, never from the out × r M). That costs
O(r²(in + out)) for the Grams and O(r³) for the eigendecompositions, and it batches: every function takes
stacked pairs (… × r × in, … × out × r) as well as single ones, so that a method makes one call per shape
of adapter per step (`LoraPairGroup`).

The methods call the `*_trained_pairs` forms, which leave alone the pairs a refactoring cannot apply to:
B = 0 (LoRA's standard initialisation: balancing would zero A as well and stall training) and non-finite
factors (a diverging run, which the engine stops on its own; an eigendecomposition of them would raise and
take every pair of the batch with it). A mask, not a branch, so no host synchronisation.

Everything is computed in float64: the product B·A must survive to ~1e-12, far below the 1e-5 the tests
demand, and Σ_A² squares the condition number of A.
"""

from __future__ import annotations

import torch


def _scale_columns(matrix: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """matrix · diag(scales), batched."""
    return matrix * scales.unsqueeze(-2)


def refactoring_matrices(
    A: torch.Tensor, B: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """P and P⁻¹ (… × r × r, float64). `eps` keeps Σ_A⁻¹ and Σ_M^-½ finite when a factor is (nearly)
    rank-deficient, B = 0 included.

    The signs of P's columns are free (eigenvectors' signs are arbitrary); they are chosen so that each row
    of the refactored A points the way the same row of A did. BaLoRA leaves Adam's moments as they are,
    and a row whose sign flipped from one step to the next would meet moments of the opposite sign.
    """
    A64, B64 = A.double(), B.double()
    gram_A = A64 @ A64.mT
    eig_A, V_A = torch.linalg.eigh(gram_A)
    sigma_A = eig_A.clamp_min(0).sqrt() + eps
    scaled_V_A = _scale_columns(V_A, sigma_A)  # V_A Σ_A
    eig_M, V_M = torch.linalg.eigh(scaled_V_A.mT @ (B64.mT @ B64) @ scaled_V_A)
    sigma_M = eig_M.clamp_min(0).sqrt() + eps
    P = _scale_columns(_scale_columns(V_A, 1.0 / sigma_A) @ V_M, sigma_M.sqrt())
    # P⁻¹ = Σ_M^-½ V_Mᵀ Σ_A V_Aᵀ: exact up to the orthogonality of V_A and V_M, no solve needed.
    P_inverse = _scale_columns(V_M, sigma_M.rsqrt()).mT @ scaled_V_A.mT
    # Row k of PᵀA has inner product (Pᵀ·AAᵀ)_kk with row k of A.
    signs = torch.where(torch.diagonal(P.mT @ gram_A, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(P.dtype)
    return _scale_columns(P, signs), P_inverse * signs.unsqueeze(-1)


def refactoring_matrix(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """P alone (… × r × r, float64)."""
    return refactoring_matrices(A, B, eps)[0]


def refactor_pair(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') = (PᵀA, B P⁻ᵀ): same product, A'A'ᵀ = B'ᵀB' = Σ_M (diagonal), in A's and B's dtypes."""
    P, P_inverse = refactoring_matrices(A, B, eps)
    A_new = P.mT @ A.double()
    B_new = B.double() @ P_inverse.mT
    return A_new.to(A.dtype), B_new.to(B.dtype)


def precondition_gradients(
    A: torch.Tensor, B: torch.Tensor, grad_A: torch.Tensor, grad_B: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S⁻¹ g_A, g_B S) with S = PPᵀ, so S⁻¹ = P⁻ᵀP⁻¹: a plain step in refactored coordinates."""
    P, P_inverse = refactoring_matrices(A, B, eps)
    S = P @ P.mT
    S_inverse = P_inverse.mT @ P_inverse
    new_grad_A = S_inverse @ grad_A.double()
    new_grad_B = grad_B.double() @ S
    return new_grad_A.to(grad_A.dtype), new_grad_B.to(grad_B.dtype)


def trained_pairs(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A boolean per pair (…): B ≠ 0 and both factors finite."""
    nonzero = B.flatten(-2).abs().amax(dim=-1) > 0
    finite = torch.isfinite(A).flatten(-2).all(dim=-1) & torch.isfinite(B).flatten(-2).all(dim=-1)
    return nonzero & finite


def _stand_ins(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep, A, B): `trained_pairs` as a mask broadcastable over the factors, and A and B with the other
    pairs replaced by identity blocks, whose decompositions are trivial and never raise."""
    keep = trained_pairs(A, B)[..., None, None]
    eye_A = torch.eye(*A.shape[-2:], dtype=A.dtype, device=A.device).expand_as(A)
    eye_B = torch.eye(*B.shape[-2:], dtype=B.dtype, device=B.device).expand_as(B)
    return keep, torch.where(keep, A, eye_A), torch.where(keep, B, eye_B)


def refactor_trained_pairs(A: torch.Tensor, B: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`refactor_pair` where `trained_pairs`, the pair as it was elsewhere."""
    keep, safe_A, safe_B = _stand_ins(A, B)
    new_A, new_B = refactor_pair(safe_A, safe_B, eps=eps)
    return torch.where(keep, new_A, A), torch.where(keep, new_B, B)


def precondition_trained_pairs(
    A: torch.Tensor, B: torch.Tensor, grad_A: torch.Tensor, grad_B: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`precondition_gradients` where `trained_pairs`, the plain gradients elsewhere."""
    keep, safe_A, safe_B = _stand_ins(A, B)
    new_grad_A, new_grad_B = precondition_gradients(safe_A, safe_B, grad_A, grad_B, eps)
    return torch.where(keep, new_grad_A, grad_A), torch.where(keep, new_grad_B, grad_B)
