"""Speed benchmark of the ltrRNN fitter (not a timed test).

Run ``python benchmarks/bench_fit.py`` (add ``--quick`` for fewer iterations).  Each size and
variant runs in its own subprocess (2 threads, float32) so that its peak RSS is isolated.  Prints,
for sizes S (K=250, T=50, N=100, D=200, R=5) and L (K=600, T=100, N=200, D=200, R=5):

- seconds per iteration of the real training loop (forward + backward + Adam step, with the
  loop's bookkeeping) for the factored latent model and for a dense variant that materialises the
  K×D×D weights W_k (the reference design), and their ratio;
- achieved GFLOP/s (analytic matmul FLOPs) against the measured float32 matmul peak;
- peak RSS per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {"S": dict(K=250, T=50, N=100, D=200, R=5), "L": dict(K=600, T=100, N=200, D=200, R=5)}
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _flops(K: int, T: int, N: int, D: int, R: int, dense: bool) -> float:
    """Matmul FLOPs of one iteration (backward counted as 2x forward)."""
    decoder = 2.0 * K * T * D * N
    if dense:
        recurrent = 2.0 * K * D * D * T + 2.0 * K * D * D * R
    else:
        recurrent = 4.0 * K * R * D * T
    return 3.0 * (decoder + recurrent)


def _matmul_peak() -> float:
    import torch

    torch.set_num_threads(THREADS)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def _worker(size: str, variant: str, iters: int) -> dict:
    import numpy as np
    import torch
    import xarray as xr

    torch.set_num_threads(THREADS)
    from nwb_ltr.config import FitConfig, Likelihood, ModelConfig
    from nwb_ltr.fitting._loop import Trainer
    from nwb_ltr.model import LtrRNN

    p = SIZES[size]
    K, T, N, D, R = p["K"], p["T"], p["N"], p["D"], p["R"]
    cfg = ModelConfig(rank=R, rnn_dim=D, likelihood=Likelihood.POISSON, bin_size=0.02)
    cls = _dense_class() if variant == "dense" else LtrRNN
    times = (np.arange(T) - T // 2) * 0.02
    model = cls(
        n_units=N,
        n_time=T,
        condition_index=torch.arange(K) % 8,
        n_conditions=8,
        input_active=torch.as_tensor(times < 0),
        config=cfg,
        gp_cholesky=torch.eye(K),
        generator=torch.Generator().manual_seed(0),
    )
    y = torch.as_tensor(np.random.default_rng(0).poisson(0.3, (K, T, N)), dtype=torch.float32)
    codes = torch.as_tensor(np.where(np.random.default_rng(1).random((K, T, N)) < 0.1, 1, 0).astype(np.int8))
    fit_cfg = FitConfig(max_iters=iters + 2, patience=None)
    trainer = Trainer(model, fit_cfg, y, codes, seed=0, checkpoint_dir=None, fingerprint="bench")
    trainer.run()
    secs = np.diff([h["seconds"] for h in trainer.history])[1:]  # drop the first (warm-up) step
    del xr
    sec = float(np.median(secs))
    return {
        "size": size,
        "variant": variant,
        "sec_per_iter": sec,
        "gflops": _flops(K, T, N, D, R, variant == "dense") / sec / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _dense_class() -> type:
    import torch

    from nwb_ltr.model import LtrRNN, ModelOutput
    from nwb_ltr.model._ltr import fast_tanh

    class DenseLtrRNN(LtrRNN):
        """Same model, reference design: W_k = A diag(c_k) Bᵀ materialised as (K, D, D)."""

        def forward(self, trials: torch.Tensor | None = None, *, readout: bool = False) -> ModelOutput:
            cond = self.condition_index
            c = self.trial_factors()
            a, b = self.column_factors(), self.row_factors()
            w = torch.einsum("dr,kr,er->kde", a, c, b)  # (K, D, D)
            eff = self.effective_parameters()
            inputs = self.inputs()
            drive = self._drive(inputs, cond, eff["input_map"], eff["bias"])
            x = self._initial(eff["initial_states"], cond)
            phis, xs = [], [x]
            for t in range(self.n_time):
                phi = fast_tanh(x)  # same nonlinearity kernel as the factored model
                phis.append(phi)
                if t < self.n_time - 1:
                    rec = torch.bmm(w, phi.unsqueeze(-1)).squeeze(-1)
                    x = x + self.alpha * (rec + drive[:, t] - x)
                    xs.append(x)
            latents = torch.stack(xs) @ torch.linalg.pinv(a).T
            return ModelOutput(
                eta_tm=self._readout(torch.stack(phis)) if readout else None,
                latents_tm=latents,
                phi_steps=tuple(phis),
                inputs=inputs,
                likelihood=self.config.likelihood,
            )

    return DenseLtrRNN


PASSIVE = False


def _run_sub(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    if PASSIVE:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: much faster on a machine shared with other busy processes",
    )
    parser.add_argument("--worker", nargs=3, metavar=("SIZE", "VARIANT", "ITERS"), help=argparse.SUPPRESS)
    parser.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        print(json.dumps({"peak_gflops": _matmul_peak()}))
        return
    if args.worker:
        size, variant, iters = args.worker
        print(json.dumps(_worker(size, variant, int(iters))))
        return
    global PASSIVE
    PASSIVE = args.passive
    load = os.getloadavg()
    policy = "PASSIVE" if PASSIVE else "default"
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {THREADS} threads, float32, OMP wait policy {policy}"
    )
    peak = _run_sub("--peak")["peak_gflops"]
    print(f"measured float32 matmul peak: {peak:.1f} GFLOP/s")
    iters = {
        "S": (8 if args.quick else 20, 3 if args.quick else 5),
        "L": (5 if args.quick else 10, 2 if args.quick else 3),
    }
    rows = {}
    for size in ("S", "L"):
        for variant, n in zip(("factored", "dense"), iters[size]):
            rows[size, variant] = r = _run_sub("--worker", size, variant, str(n))
            print(
                f"{size} {variant:9s} {r['sec_per_iter']:8.4f} s/iter  {r['gflops']:6.1f} GFLOP/s "
                f"({100 * r['gflops'] / peak:5.1f} % of peak)  peak RSS {r['peak_rss_mb']:7.0f} MB"
            )
        ratio = rows[size, "dense"]["sec_per_iter"] / rows[size, "factored"]["sec_per_iter"]
        print(f"{size} speed-up factored vs dense: {ratio:.1f}x")


if __name__ == "__main__":
    main()
