"""The low-tensor-rank RNN as a torch module (parameters and forward pass; no I/O, no loops over
iterations).

For trial k the recurrent weights are ``W_k = Σ_r c[k, r] a_r b_rᵀ`` (a_r, b_r unit norm), but
W_k is never formed: the recurrent drive is ``A (c_k ⊙ (Bᵀ φ(x)))``.  With inputs, bias and
initial states in span(A) (``latent_inputs=True``, the default) the state stays in span(A) and
the dynamics run in the R-dim latent κ (x = A κ):

    κ ← κ + (Δ/τ) (−κ + c_k ⊙ (Bᵀ tanh(A κ)) + G̃ u_c(t) + β̃)

so the per-step cost is two (trials × D × R) products; the D-dim activity φ = tanh(A κ) is only
needed by the decoder, which is applied to all bins at once after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nwb_ltr.config import (
    DecoderKind,
    InitialState,
    InputKind,
    Integrator,
    Likelihood,
    ModelConfig,
    TrialFactors,
)
from nwb_ltr.errors import ConfigError
from nwb_ltr.model._inputs import FixedInputs, FreeInputs, SmoothInputs


@dataclass
class ModelOutput:
    """One forward pass over a set of trials.

    Tensors are stored time-major (contiguous per time step, which makes the recurrence and the
    loss cheaper); the properties give ``(trial, time, ...)`` views.

    Attributes
    ----------
    eta_tm : ``(time, trial, unit)`` readout before the link (None when run with ``readout=False``).
    latents_tm : ``(time, trial, rank)`` κ, coordinates of the state in span(A).
    phi_steps : per bin, ``(trial, rnn_unit)`` activity tanh(x) (``phi_tm`` stacks them).
    inputs : ``(condition, time, input)`` realised input time courses.
    likelihood : the observation model (decides the link).
    bin_size : bin width Δ in seconds; the Poisson expected count is ``Δ softplus(eta / Δ)``.
    """

    eta_tm: torch.Tensor | None
    latents_tm: torch.Tensor
    phi_steps: tuple[torch.Tensor, ...]
    inputs: torch.Tensor
    likelihood: Likelihood
    bin_size: float = 1.0

    @property
    def eta(self) -> torch.Tensor:
        """``(trial, time, unit)`` readout before the link."""
        if self.eta_tm is None:
            raise ValueError("this forward pass ran without the readout (readout=False)")
        return self.eta_tm.transpose(0, 1)

    @property
    def mean(self) -> torch.Tensor:
        """``(trial, time, unit)`` expected data: eta (Gaussian) or, for Poisson, the expected count
        ``Δ softplus(eta / Δ)`` (Δ = bin size): the rate in Hz is softplus of the decoder output
        (design.md §2), with eta = Δ × decoder output expressed in counts per bin.  The count is
        floored at 1e-10, as in the training loss (float underflow would give exact zeros)."""
        if self.likelihood is Likelihood.POISSON:
            return F.softplus(self.eta, beta=1.0 / self.bin_size).clamp_min(1e-10)
        return self.eta

    @property
    def latents(self) -> torch.Tensor:
        """``(trial, time, rank)`` κ."""
        return self.latents_tm.transpose(0, 1)

    @property
    def phi_tm(self) -> torch.Tensor:
        """``(time, trial, rnn_unit)`` activity."""
        return torch.stack(self.phi_steps)

    @property
    def phi(self) -> torch.Tensor:
        """``(trial, time, rnn_unit)`` activity."""
        return self.phi_tm.transpose(0, 1)


class _FastTanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) − 1: several times faster than ``torch.tanh`` on CPU (vectorised
    sigmoid), same value to ~1e-7 absolute; backward uses the saved output, g (1 − y²)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1.0 - y * y)


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """The RNN nonlinearity φ = tanh (see :class:`_FastTanh`)."""
    return _FastTanh.apply(x)


class _TakeRows(torch.autograd.Function):
    """``table[index]`` along dim 0 with a deterministic backward.

    The backward of plain advanced indexing accumulates with ``index_put_(accumulate=True)``,
    which on CPU adds float32 rows with atomic adds from several threads once the tensor has
    more than ~32k elements: the summation order, and so the last bits of the gradient, then
    change from run to run.  Here the gradient is the matrix product ``onehotᵀ @ grad``, whose
    order is fixed, so fits with 2+ threads are bitwise reproducible across processes.
    """

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        onehot = F.one_hot(index, ctx.n_rows).to(grad.dtype)  # (len(index), rows)
        flat = grad.reshape(index.shape[0], -1)
        return (onehot.T @ flat).reshape(ctx.n_rows, *grad.shape[1:]), None


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D long ``index``, with a bitwise-reproducible gradient."""
    return _TakeRows.apply(table, index)


def _unit_columns(raw: torch.Tensor) -> torch.Tensor:
    return raw / torch.linalg.vector_norm(raw, dim=0, keepdim=True)


class LtrRNN(nn.Module):
    """Low-tensor-rank RNN with condition-specific inputs and a GP-smooth trial-factor prior.

    Parameters
    ----------
    n_units
        Number of recorded units N.
    n_time
        Number of bins T (the model time axis equals the data's).
    condition_index
        ``(trial,)`` integer condition of each trial, in ``0 .. n_conditions - 1``.
    n_conditions
        Number of conditions C.
    input_active
        ``(time,)`` boolean: bins that receive the condition inputs.
    config
        Model structure; ``rank``, ``rnn_dim``, ``likelihood`` and ``bin_size`` must be resolved.
    gp_cholesky
        ``(trial, trial)`` Cholesky factor L of the trial-factor prior (c = mean + L z); None for
        c = mean + z (used when re-running stored factors).
    generator
        Random generator for the initial parameter values (CPU).
    dtype
        Floating-point type of the parameters.
    inputs
        ``(condition, time, input)`` realised inputs to use as fixed buffers instead of learned
        input time courses (re-simulation from a stored result).
    """

    def __init__(
        self,
        *,
        n_units: int,
        n_time: int,
        condition_index: torch.Tensor,
        n_conditions: int,
        input_active: torch.Tensor,
        config: ModelConfig,
        gp_cholesky: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        inputs: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if config.likelihood is None or config.bin_size is None:
            raise ConfigError("ModelConfig.likelihood and bin_size must be resolved before building LtrRNN")
        self.config = config
        self.n_units, self.n_time, self.n_conditions = n_units, n_time, n_conditions
        rank, dim = config.rank, config.rnn_dim
        self.n_inputs = config.n_inputs if config.n_inputs is not None else rank
        if inputs is not None:
            self.n_inputs = int(inputs.shape[-1])
        self.alpha = float(config.bin_size) / (config.tau * config.substeps)
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(
                f"bin_size / (tau * substeps) must be in (0, 1] for a stable fixed step, got {self.alpha:.3g}; "
                "increase tau or substeps"
            )
        n_trials = int(condition_index.shape[0])
        self.register_buffer("condition_index", condition_index.to(torch.long))
        self.register_buffer("gp_cholesky", None if gp_cholesky is None else gp_cholesky.to(dtype))

        def randn(*shape: int, scale: float = 1.0) -> nn.Parameter:
            x = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
            return nn.Parameter(x.to(dtype))

        n_comp = rank + config.static_rank  # trial-varying components first, then the static ones
        self.column_raw = randn(dim, n_comp)
        self.row_raw = randn(dim, n_comp)
        self.factor_mean = randn(n_comp)  # the static components' gains g_s are its last entries
        if config.init_gain is not None:  # random signs, magnitude init_gain (same random stream)
            with torch.no_grad():
                self.factor_mean.copy_(torch.where(self.factor_mean >= 0, 1.0, -1.0) * config.init_gain)
        # z of the trial-varying components (c = mean + L z); without a prior (stored factors
        # re-run by from_result) c = mean + z for every component
        n_z = rank if gp_cholesky is not None else n_comp
        self.factor_z = nn.Parameter(torch.zeros(n_trials, n_z, dtype=dtype))
        if inputs is not None:
            self.inputs: nn.Module = FixedInputs(inputs.to(dtype))
        elif config.input_kind is InputKind.SMOOTH:
            self.inputs = SmoothInputs(
                n_conditions,
                self.n_inputs,
                input_active,
                config.n_input_basis,
                generator=generator,
                dtype=dtype,
            )
        else:
            self.inputs = FreeInputs(
                n_conditions, self.n_inputs, input_active, generator=generator, dtype=dtype
            )
        space = n_comp if config.latent_inputs else dim
        self.input_map_raw = randn(space, self.n_inputs, scale=self.n_inputs**-0.5)
        self.bias_raw = nn.Parameter(torch.zeros(space, dtype=dtype))
        n_init = n_conditions if config.initial_state is InitialState.PER_CONDITION else 1
        self.init_raw = randn(n_init, space, scale=0.1)
        if config.decoder is DecoderKind.ORTHOGONAL:
            shape = (dim, n_units) if dim >= n_units else (n_units, dim)
            self.decoder_raw = randn(*shape)
        else:
            self.decoder_raw = randn(n_units, dim, scale=dim**-0.5)
        self.decoder_scale = nn.Parameter(torch.ones(n_units, dtype=dtype))
        self.decoder_offset = nn.Parameter(torch.zeros(n_units, dtype=dtype))

    @classmethod
    def from_result(
        cls, result: Any, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> LtrRNN:
        """Rebuild a fitted model from a ``FitResult``'s stored arrays alone.

        See :func:`nwb_ltr.model.from_result`; ``model().mean`` re-simulates
        ``result.reconstruction``.
        """
        from nwb_ltr.model._restore import from_result

        return from_result(result, dtype=dtype, device=device)

    # ---------------------------------------------------------------- derived parameters
    def column_factors(self) -> torch.Tensor:
        """A, ``(rnn_unit, rank)`` with unit-norm columns a_r."""
        return _unit_columns(self.column_raw)

    def row_factors(self) -> torch.Tensor:
        """B, ``(rnn_unit, rank)`` with unit-norm columns b_r."""
        return _unit_columns(self.row_raw)

    def trial_factors(self) -> torch.Tensor:
        """c, ``(trial, rank + static_rank)`` = mean + L z (``trial_factors="shared"``: the mean on
        every trial); the last ``static_rank`` columns are the static gains on every trial."""
        if self.gp_cholesky is None:
            return self.factor_mean + self.factor_z
        rank = self.config.rank
        mean = self.factor_mean[:rank]
        if self.config.trial_factors is TrialFactors.SHARED:
            varying = mean.expand(self.factor_z.shape)
        else:
            varying = mean + self.gp_cholesky @ self.factor_z
        if not self.config.static_rank:
            return varying
        static = self.factor_mean[rank:].expand(varying.shape[0], self.config.static_rank)
        return torch.cat([varying, static], dim=1)

    def decoder_weight(self) -> torch.Tensor:
        """Readout matrix ``(unit, rnn_unit)`` (orthonormal rows, or columns when N > D)."""
        if self.config.decoder is not DecoderKind.ORTHOGONAL:
            return self.decoder_raw
        q, r = torch.linalg.qr(self.decoder_raw)
        sign = torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q.dtype)
        q = q * sign
        return q.T if self.config.rnn_dim >= self.n_units else q

    def effective_parameters(self) -> dict[str, torch.Tensor]:
        """Input map G ``(rnn_unit, input)``, bias β ``(rnn_unit,)`` and initial states
        ``(init, rnn_unit)`` in the D-dim RNN space (mapped through A when ``latent_inputs``)."""
        if not self.config.latent_inputs:
            return {"input_map": self.input_map_raw, "bias": self.bias_raw, "initial_states": self.init_raw}
        a = self.column_factors()
        return {
            "input_map": a @ self.input_map_raw,
            "bias": a @ self.bias_raw,
            "initial_states": self.init_raw @ a.T,
        }

    # ---------------------------------------------------------------- dynamics
    def _drive(
        self, inputs: torch.Tensor, cond: torch.Tensor, input_map: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        per_condition = torch.matmul(inputs, input_map.T) + bias  # (C, T, space)
        return take_rows(per_condition, cond)  # (K, T, space)

    def _initial(self, init: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if init.shape[0] == 1:
            return init.expand(cond.shape[0], init.shape[1])
        return take_rows(init, cond)

    def _integrate(
        self,
        state: torch.Tensor,
        drive: torch.Tensor,
        c: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        latent: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run the fixed-step recurrence; return time-major states (T,K,space) and phi per bin (K,D)."""
        alpha, n_sub = self.alpha, self.config.substeps
        rk4 = self.config.integrator is Integrator.RK4
        a_t, b_t = a.T.contiguous(), b.T.contiguous()  # (R, D): fast matmul layouts forward and backward
        if latent and not rk4 and n_sub == 1:
            return self._euler_latent(state, drive, c, a_t, b_t)

        def activity(s: torch.Tensor) -> torch.Tensor:
            return fast_tanh(s @ a_t) if latent else fast_tanh(s)

        def rhs(s: torch.Tensor, phi: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            rec = c * F.linear(phi, b_t)
            return (rec if latent else rec @ a_t) + u - s

        drives = drive.unbind(1)
        states, phis = [state], []
        for t in range(self.n_time):
            phi = activity(state)
            phis.append(phi)
            if t == self.n_time - 1:
                break
            u = drives[t]
            for sub in range(n_sub):
                p = phi if sub == 0 else activity(state)
                if not rk4:
                    state = state + alpha * rhs(state, p, u)
                    continue
                k1 = rhs(state, p, u)
                s2 = state + 0.5 * alpha * k1
                k2 = rhs(s2, activity(s2), u)
                s3 = state + 0.5 * alpha * k2
                k3 = rhs(s3, activity(s3), u)
                s4 = state + alpha * k3
                k4 = rhs(s4, activity(s4), u)
                state = state + (alpha / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            states.append(state)
        return torch.stack(states), tuple(phis)

    def _euler_latent(
        self, state: torch.Tensor, drive: torch.Tensor, c: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Hot path: κ ← (1 − α) κ + α u_t + (α c) ⊙ (Bᵀ tanh(A κ)), seven small ops per step."""
        alpha = self.alpha
        decay = 1.0 - alpha
        scaled_c = alpha * c
        drives = (alpha * drive).unbind(1)
        states, phis = [state], []
        for t in range(self.n_time):
            phi = fast_tanh(state @ a_t)
            phis.append(phi)
            if t == self.n_time - 1:
                break
            state = torch.addcmul(torch.add(drives[t], state, alpha=decay), F.linear(phi, b_t), scaled_c)
            states.append(state)
        return torch.stack(states), tuple(phis)

    def readout_weight(self) -> torch.Tensor:
        """Decoder matrix with the per-unit scale folded in, ``(unit, rnn_unit)``."""
        return self.decoder_weight() * self.decoder_scale[:, None]

    def _readout(self, phi: torch.Tensor) -> torch.Tensor:
        """Decoder on all bins at once: one ``(T*K, D) @ (D, N)`` product."""
        t, k, d = phi.shape
        return torch.addmm(self.decoder_offset, phi.reshape(t * k, d), self.readout_weight().T).reshape(
            t, k, -1
        )

    def forward(self, trials: torch.Tensor | None = None, *, readout: bool = True) -> ModelOutput:
        """Simulate trials (all when None) and read out the expected data.

        Parameters
        ----------
        trials
            ``(batch,)`` long tensor of trial positions, or None for every trial.
        readout
            Apply the decoder; False leaves ``eta_tm`` None (the fitter fuses the decoder with
            the loss, see ``nwb_ltr.fitting``).
        """
        cond = self.condition_index if trials is None else self.condition_index[trials]
        c = self.trial_factors()
        c = c if trials is None else take_rows(c, trials)
        a, b = self.column_factors(), self.row_factors()
        inputs = self.inputs()
        drive = self._drive(inputs, cond, self.input_map_raw, self.bias_raw)
        state0 = self._initial(self.init_raw, cond)
        states, phi = self._integrate(state0, drive, c, a, b, latent=self.config.latent_inputs)
        latents = states if self.config.latent_inputs else states @ torch.linalg.pinv(a).T
        return ModelOutput(
            eta_tm=self._readout(torch.stack(phi)) if readout else None,
            latents_tm=latents,
            phi_steps=phi,
            inputs=inputs,
            likelihood=self.config.likelihood,  # type: ignore[arg-type]
            bin_size=float(self.config.bin_size),  # type: ignore[arg-type]
        )

    def simulate_full(self, trials: torch.Tensor | None = None) -> torch.Tensor:
        """States x ``(trial, time, rnn_unit)`` from the general D-dim recurrence
        ``x ← x + (Δ/τ)(−x + A (c ⊙ Bᵀ tanh x) + G u + β)`` whatever ``latent_inputs`` is.

        With the default options (inputs, bias, initial states in span(A)) x stays in span(A)
        and equals A κ of :meth:`forward`; this is the path used to test that invariant.
        """
        cond = self.condition_index if trials is None else self.condition_index[trials]
        c = self.trial_factors()
        c = c if trials is None else take_rows(c, trials)
        a, b = self.column_factors(), self.row_factors()
        eff = self.effective_parameters()
        drive = self._drive(self.inputs(), cond, eff["input_map"], eff["bias"])
        state0 = self._initial(eff["initial_states"], cond)
        states, _ = self._integrate(state0, drive, c, a, b, latent=False)
        return states.transpose(0, 1)
