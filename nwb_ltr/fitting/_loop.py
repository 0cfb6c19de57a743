"""The training loop: Adam, masked objective, validation early stopping, NaN roll-back, checkpoints.

Only :class:`Trainer` lives here; the model holds the math (``nwb_ltr.model``) and
``nwb_ltr.fitting._fit`` wires data, masks and the result together.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nwb_ltr.config import FitConfig, Likelihood
from nwb_ltr.errors import ConfigError, FitError
from nwb_ltr.fitting import _metrics
from nwb_ltr.model import LtrRNN

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Trainer:
    """Runs the optimisation of one :class:`~nwb_ltr.model.LtrRNN` on masked data.

    Parameters
    ----------
    model
        The model (already on ``y``'s device).
    config
        Fit settings.
    y
        ``(trial, time, unit)`` data with missing entries set to 0.
    codes
        ``(trial, time, unit)`` int8 mask codes (0 train, 1 validation, 2 test, -1 unused).
    seed
        Seed of the trial dropout / mini-batch generator.
    checkpoint_dir
        Folder for ``checkpoint.pt`` (None = no checkpoints).
    fingerprint
        Identifies data, masks and config; a checkpoint with another fingerprint is refused.
    progress
        Show a tqdm progress bar.
    """

    def __init__(
        self,
        model: LtrRNN,
        config: FitConfig,
        y: torch.Tensor,
        codes: torch.Tensor,
        *,
        seed: int,
        checkpoint_dir: Path | None,
        fingerprint: str,
        progress: bool = False,
    ) -> None:
        self.model, self.config = model, config
        self.likelihood: Likelihood = model.config.likelihood  # type: ignore[assignment]
        self.bin_size = float(model.config.bin_size)  # type: ignore[arg-type]
        # time-major copies: the model produces (time, trial, unit) tensors
        self.y = y.transpose(0, 1).contiguous()
        self.train_w = (codes == 0).transpose(0, 1).contiguous().to(y.dtype)
        self.val_w = (codes == 1).transpose(0, 1).contiguous().to(y.dtype)
        self.n_train = int((codes == 0).sum().item())
        self.n_val = int((codes == 1).sum().item())
        n_active = int((model.inputs().detach() != 0).any(dim=(0, 2)).sum().item())
        self.n_input_entries = max(1, model.n_conditions * max(n_active, 1) * model.n_inputs)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(int(seed) + 1)
        self.checkpoint_path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
        self.fingerprint = fingerprint
        self.progress = progress
        self.lr = config.lr
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best_val = math.inf
        self.best_iter = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0
        self.n_decays = 0
        self.n_rollbacks = 0
        self.elapsed = 0.0
        self.stopped_reason: str | None = None
        self._good = self._snapshot()

    # ------------------------------------------------------------------ objective
    def objective(
        self, trials: torch.Tensor | None, keep: torch.Tensor | None, with_val: bool
    ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """(objective, train NLL per entry, validation NLL per entry or None) at the current parameters."""
        model, cfg = self.model, self.config
        out = model(trials, readout=False)
        y = self.y if trials is None else self.y[:, trials]
        w = self.train_w if trials is None else self.train_w[:, trials]
        if keep is not None:
            w = w * keep.to(w.dtype)[None, :, None]
        want_val = with_val and trials is None
        train_sum, val_sum = _metrics.decoder_nll(
            out.phi_steps,
            model.readout_weight(),
            model.decoder_offset,
            y,
            w,
            self.likelihood,
            w_val=self.val_w if want_val else None,
            bin_size=self.bin_size,
        )
        partial = keep is not None or trials is not None
        train_nll = train_sum / (w.sum().clamp_min(1.0) if partial else max(self.n_train, 1))
        obj = train_nll
        if cfg.activity_penalty:
            obj = obj + cfg.activity_penalty * out.latents_tm.pow(2).mean()
        if cfg.input_penalty:
            obj = obj + cfg.input_penalty * out.inputs.pow(2).sum() / self.n_input_entries
        if cfg.prior_weight and model.gp_cholesky is not None:
            obj = obj + cfg.prior_weight * 0.5 * model.factor_z.pow(2).sum() / max(self.n_train, 1)
        val = float(val_sum.item()) / self.n_val if want_val else None
        return obj, train_nll, val

    def _validation(self) -> float:
        model = self.model
        with torch.no_grad():
            out = model(readout=False)
            val_sum, _ = _metrics.decoder_nll(
                out.phi_steps,
                model.readout_weight(),
                model.decoder_offset,
                self.y,
                self.val_w,
                self.likelihood,
                bin_size=self.bin_size,
            )
            return float(val_sum.item()) / self.n_val

    # ------------------------------------------------------------------ state
    def _snapshot(self) -> dict[str, Any]:
        """The state at the start of the current iteration, whose loss is known to be finite."""
        return {
            "params": _clone_state(self.model),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "iteration": self.iteration,
            "n_history": len(self.history),
            "early_stopping": (self.best_val, self.best_iter, self.best_state, self.bad_evals, self.n_decays),
        }

    def _rollback(self, what: str) -> None:
        self.n_rollbacks += 1
        if self.n_rollbacks > self.config.max_nan_retries:
            raise FitError(
                f"fit diverged: non-finite {what} at iteration {self.iteration} after "
                f"{self.config.max_nan_retries} roll-backs with halved learning rate; lower lr or check the data"
            )
        at = self.iteration
        good = self._good  # the last parameters with a finite loss, before the step that broke them
        self.model.load_state_dict(good["params"])
        self.optimizer.load_state_dict(copy.deepcopy(good["optimizer"]))
        self.iteration = good["iteration"]
        del self.history[good["n_history"] :]
        self.best_val, self.best_iter, self.best_state, self.bad_evals, self.n_decays = good["early_stopping"]
        self.lr /= 2.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        logger.warning(
            "non-finite %s at iteration %d: rolled back to the last good state, lr halved to %.3g",
            what,
            at,
            self.lr,
        )

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` atomically (temporary file, then ``os.replace``)."""
        if self.checkpoint_path is None:
            return
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": 1,
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "lr": self.lr,
            "history": self.history,
            "best_state": self.best_state,
            "best_val": self.best_val,
            "best_iter": self.best_iter,
            "bad_evals": self.bad_evals,
            "n_decays": self.n_decays,
            "n_rollbacks": self.n_rollbacks,
            "elapsed": self.elapsed,
            "stopped_reason": self.stopped_reason,
        }
        tmp = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoint.pt`` if present; return whether a checkpoint was loaded."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            logger.info(
                "no checkpoint to resume from%s; starting a new fit", f" in {path.parent}" if path else ""
            )
            return False
        device = self.y.device
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint {path} was written for a different fit (data, masks, seed or config differ); "
                "delete it or fit with resume=False"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for key in (
            "iteration",
            "lr",
            "history",
            "best_state",
            "best_val",
            "best_iter",
            "bad_evals",
            "n_decays",
            "n_rollbacks",
            "elapsed",
            "stopped_reason",
        ):
            setattr(self, key, state[key])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self._good = self._snapshot()
        logger.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # ------------------------------------------------------------------ loop
    def _draw(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        cfg, n_trials = self.config, self.y.shape[1]
        trials = keep = None
        if cfg.batch_size is not None and cfg.batch_size < n_trials:
            trials = torch.randperm(n_trials, generator=self.generator)[: cfg.batch_size].sort().values
            trials = trials.to(self.y.device)
        if cfg.trial_dropout > 0:
            n = n_trials if trials is None else trials.shape[0]
            keep = (torch.rand(n, generator=self.generator) >= cfg.trial_dropout).to(self.y.device)
        return trials, keep

    def run(self) -> None:
        """Optimise until ``max_iters`` or early stopping (validation loss, never the test loss)."""
        cfg = self.config
        if self.stopped_reason == "early_stopping":
            return
        self.stopped_reason = None
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(
            total=cfg.max_iters, initial=self.iteration, disable=not self.progress, desc="fit", unit="it"
        )
        start = time.perf_counter() - self.elapsed
        try:
            while self.iteration < cfg.max_iters:
                it = self.iteration
                evaluate = self.n_val > 0 and (it % cfg.eval_every == 0 or it == cfg.max_iters - 1)
                trials, keep = self._draw()
                obj, train_nll, val = self.objective(trials, keep, with_val=evaluate)
                if evaluate and val is None:
                    val = self._validation()
                if not torch.isfinite(obj).item():
                    self._rollback("loss")
                    continue
                obj.backward()
                norm = torch.nn.utils.clip_grad_norm_(
                    params, cfg.grad_clip if cfg.grad_clip is not None else math.inf
                )
                if not torch.isfinite(norm).item():
                    self.optimizer.zero_grad(set_to_none=True)
                    self._rollback("gradient")
                    continue
                self._good = self._snapshot()  # finite loss and gradient here: roll back to this point
                if evaluate and val is not None:
                    self._early_stopping_update(val, it)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.elapsed = time.perf_counter() - start
                self.history.append(
                    {
                        "iteration": it,
                        "objective": float(obj.item()),
                        "train_loss": float(train_nll.item()),
                        "val_loss": float("nan") if val is None else val,
                        "lr": self.lr,
                        "seconds": self.elapsed,
                    }
                )
                self.iteration += 1
                bar.update(1)
                if evaluate:
                    bar.set_postfix(train=f"{self.history[-1]['train_loss']:.4g}", val=f"{val:.4g}")
                if self.checkpoint_path is not None and self.iteration % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if cfg.patience is not None and self.bad_evals >= cfg.patience:
                    if self.n_decays < cfg.lr_decays:
                        self._decay_lr()
                    else:
                        self.stopped_reason = "early_stopping"
                        break
        finally:
            bar.close()
        if self.stopped_reason is None:
            self.stopped_reason = "max_iters"
        self.save_checkpoint()

    def _decay_lr(self) -> None:
        """Validation plateau with decays left: lower the learning rate and wait ``patience`` again."""
        self.n_decays += 1
        self.bad_evals = 0
        self.lr *= self.config.lr_decay_factor
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        logger.debug("validation plateau at iteration %d: lr lowered to %.3g", self.iteration, self.lr)

    def _early_stopping_update(self, val: float, it: int) -> None:
        if val < self.best_val - self.config.min_delta * abs(self.best_val) or self.best_state is None:
            self.best_val, self.best_iter, self.bad_evals = val, it, 0
            self.best_state = _clone_state(self.model)
        else:
            self.bad_evals += 1

    def polish(self, max_evals: int) -> dict[str, Any]:
        """L-BFGS on the full-batch objective from the current parameters (``max_evals`` evaluations).

        Adam with early stopping ends near, not at, an optimum; a quasi-Newton polish finishes the
        descent.  The polished parameters are kept only when they are finite and the validation
        loss does not rise (the early-stopping criterion still decides); otherwise they are undone.
        Returns ``polish_evals``, ``polish_kept`` and ``polish_val_change`` (validation loss after −
        before) for the fit's metrics.
        """
        model = self.model
        before = _clone_state(model)
        val_before = self._validation()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=max_evals,
            max_eval=max_evals,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            obj, _, _ = self.objective(None, None, False)
            obj.backward()
            return obj

        start = time.perf_counter()
        try:
            optimizer.step(closure)
            val_after = self._validation()
        except RuntimeError as exc:  # e.g. a non-finite line search; the polish is optional
            logger.debug("L-BFGS polish failed (%s); keeping the Adam parameters", exc)
            val_after = math.nan
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        kept = finite and math.isfinite(val_after) and val_after <= val_before
        if not kept:
            model.load_state_dict(before)
        self.elapsed += time.perf_counter() - start
        evals = int(optimizer.state[params[0]].get("func_evals", 0)) if params else 0
        logger.debug(
            "L-BFGS polish: %d evaluations, validation %+.3g, kept=%s", evals, val_after - val_before, kept
        )
        return {
            "polish_evals": evals,
            "polish_kept": kept,
            "polish_val_change": float(val_after - val_before),
        }

    def restore_best(self) -> int:
        """Load the parameters with the best validation loss; return their iteration."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            return self.best_iter
        return self.iteration - 1 if self.iteration > 0 else 0
