"""Condition-specific input time courses u_c(t) (identical for every trial of a condition)."""

from __future__ import annotations

import math

import torch
from torch import nn


def gaussian_basis(active: torch.Tensor, n_basis: int) -> torch.Tensor:
    """Gaussian bumps evenly spread over the active bins, ``(time, basis)``; zero rows elsewhere.

    Parameters
    ----------
    active
        ``(time,)`` boolean: bins that receive inputs.
    n_basis
        Number of basis functions (capped at the number of active bins).
    """
    n_time = active.shape[0]
    idx = torch.nonzero(active).flatten().to(torch.float64)
    basis = torch.zeros(n_time, max(n_basis, 1), dtype=torch.float64)
    if idx.numel() == 0:
        return basis
    n_basis = max(1, min(n_basis, idx.numel()))
    lo, hi = float(idx.min()), float(idx.max())
    centres = torch.linspace(lo, hi, n_basis, dtype=torch.float64) if n_basis > 1 else torch.tensor([lo])
    width = max((hi - lo) / max(n_basis - 1, 1), 1.0)
    t = torch.arange(n_time, dtype=torch.float64)
    bumps = torch.exp(-0.5 * ((t[:, None] - centres[None, :]) / width) ** 2)
    basis = torch.zeros(n_time, n_basis, dtype=torch.float64)
    basis[active] = bumps[active]
    return basis


class SmoothInputs(nn.Module):
    """Inputs as learned weights on a Gaussian temporal basis: ``u_c(t) = Σ_j w[c, j] ψ_j(t)``."""

    def __init__(
        self,
        n_conditions: int,
        n_inputs: int,
        active: torch.Tensor,
        n_basis: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        basis = gaussian_basis(active, n_basis).to(dtype)
        self.register_buffer("basis", basis)
        w = torch.randn(n_conditions, basis.shape[1], n_inputs, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(w.to(dtype))

    def forward(self) -> torch.Tensor:
        """Realised inputs ``(condition, time, input)``."""
        return torch.einsum("tb,cbi->cti", self.basis, self.weight)


class FreeInputs(nn.Module):
    """Inputs as one free value per condition, active bin and input dimension."""

    def __init__(
        self,
        n_conditions: int,
        n_inputs: int,
        active: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.register_buffer("active", active.to(dtype)[None, :, None])
        w = torch.randn(n_conditions, active.shape[0], n_inputs, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter((w / math.sqrt(2.0)).to(dtype))

    def forward(self) -> torch.Tensor:
        """Realised inputs ``(condition, time, input)`` (zero outside the active bins)."""
        return self.weight * self.active


class FixedInputs(nn.Module):
    """Given, realised inputs (used to re-run a fitted model from its stored arrays)."""

    def __init__(self, inputs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("values", inputs)

    def forward(self) -> torch.Tensor:
        """The stored inputs ``(condition, time, input)``."""
        return self.values
