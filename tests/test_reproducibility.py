"""Same seed → bitwise identical fit across processes with torch on 2 threads (issue 3).

The unit tests in test_fitting.py pin torch to one thread; this file runs real 2-thread fits in
separate interpreters at a size where torch's CPU kernels go parallel (the per-trial input drive
has K·T·R = 120·50·6 = 36,000 > 32,768 elements, torch's parallel grain), which is where
atomic float adds in the backward of row indexing used to make the last bits differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nwb_ltr.model import take_rows

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np, torch, xarray as xr
    torch.set_num_threads(2)
    import nwb_ltr

    K, T, N = 120, 50, 20
    rng = np.random.default_rng(3)
    rate = np.exp(rng.normal(-1.5, 0.5, size=(1, T, N)) + 0.3 * np.sin(np.arange(K) / 20)[:, None, None])
    data = xr.DataArray(
        rng.poisson(np.broadcast_to(rate, (K, T, N))).astype(float),
        dims=("trial", "time", "unit"),
        coords={"time": (np.arange(T) - 20) * 0.02, "condition": ("trial", np.arange(K) % 8)},
        attrs={"bin_size": 0.02, "transform": "counts"},
    )
    r = nwb_ltr.fit(data, rank=6, rnn_dim=40, seed=1, max_iters=25, device="cpu", patience=None)
    digest = hashlib.sha256()
    for name in ("trial_factors", "column_factors", "row_factors", "reconstruction"):
        digest.update(np.ascontiguousarray(getattr(r, name).values).tobytes())
    print(json.dumps({"threads": torch.get_num_threads(), "sha": digest.hexdigest(),
                      "loss": r.history["objective"].values.tolist()[-1]}))
    """
)


def _run() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_thread_fits_are_bitwise_identical_across_processes() -> None:
    first, second = _run(), _run()
    assert first["threads"] == 2
    assert first == second


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_take_rows_matches_indexing_in_value_and_gradient(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(8, 50, 6, generator=gen, dtype=dtype, requires_grad=True)
    index = torch.randint(0, 8, (300,), generator=gen)
    weight = torch.randn(300, 50, 6, generator=gen, dtype=dtype)
    ours = take_rows(table, index)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), table)
    ref = table[index]
    (g_ref,) = torch.autograd.grad((ref * weight).sum(), table)
    assert torch.equal(ours, ref)
    tol = 1e-12 if dtype is torch.float64 else 1e-4
    np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=tol, atol=tol)
    # rows that are never taken get exactly zero gradient
    unused = sorted(set(range(8)) - set(index.tolist()))
    assert all(float(g_ours[i].abs().max()) == 0.0 for i in unused)
