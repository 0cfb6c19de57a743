"""Command line: ``nwb_ltr <verb> ...``.

One thin command per verb, each calling one library function.  Heavy libraries (torch, pynwb,
h5py, numpy) are imported inside the command bodies, so ``nwb_ltr --help`` is instant.  Errors
become one line on stderr and exit status 1 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

_SOURCE_HELP = (
    "local NWB path, http(s) URL, DANDI:<id>[@<version>]/<asset path>, dandi:// URL, "
    "or a bare dandiset id (with --asset)"
)


# --------------------------------------------------------------------------------------------
# argument helpers


def _int_range(text: str) -> list[int]:
    """Parse ``1-6`` / ``1,2,5`` / ``1-3,8`` into a sorted list of ints."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                values.update(range(int(lo), int(hi) + 1))
            elif part:
                values.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1-6 or 1,2,5, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers like 1-6 or 1,2,5, got {text!r}")
    return sorted(values)


def _trial_counts(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected three positive trial counts BL,AD,WO like 50,100,100, got {text!r}"
        )
    return parts  # type: ignore[return-value]


def _add_common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # sub-commands use SUPPRESS so that `nwb_ltr --debug fit ...` is not reset by the sub-parser
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logging")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only print warnings and errors"
    )


def _add_source_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source")
    g.add_argument("--asset", help="asset path or glob inside a dandiset (with a bare dandiset id)")
    g.add_argument("--api-url", help="DANDI API URL of another DANDI instance (env NWB_LTR_DANDI_API_URL)")
    g.add_argument(
        "--cache-dir", help="cache folder for streamed bytes and downloads (env NWB_LTR_CACHE_DIR)"
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="download the DANDI asset (checksum verified) instead of streaming",
    )
    g.add_argument("--timeout", type=float, help="network timeout in seconds (default 30)")
    g.add_argument("--retries", type=int, help="network retries (default 3)")


def _add_align_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "alignment (defaults for --align-to/--condition/--epoch are guessed as `inspect` suggests)"
    )
    g.add_argument("--align-to", help="trials column with the event time to align on (e.g. go_cue_time)")
    g.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("START", "STOP"),
        help="window around the event in s (default -0.5 0.5)",
    )
    g.add_argument("--bin-size", type=float, help="bin width in s (default 0.02)")
    g.add_argument(
        "--condition", help="trials column with the condition (e.g. target_id); 'none' for one condition"
    )
    g.add_argument(
        "--epoch",
        help="trials column with the block/epoch, or 'epochs' for the epochs table; 'none' to ignore",
    )
    g.add_argument(
        "--trials", help="pandas query on the trials table selecting trials, e.g. \"result == 'success'\""
    )
    g.add_argument(
        "--transform", choices=["counts", "rates", "zscore"], help="tensor content (default counts)"
    )
    g.add_argument("--smooth", type=float, help="Gaussian smoothing sigma in s (default none)")


def _add_model_options(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    g = p.add_argument_group("model and fitting")
    if not sweep:
        g.add_argument("--rank", type=int, help="tensor rank R (default 5)")
        g.add_argument("--rnn-dim", type=int, help="number of RNN units D")
        g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument(
        "--likelihood",
        choices=["poisson", "gaussian"],
        help="default: poisson for counts, gaussian otherwise",
    )
    g.add_argument(
        "--static-rank",
        type=int,
        help="S static components: a shared base W_0 of matrix rank S next to the R trial-varying ones (default 0)",
    )
    g.add_argument("--max-iters", type=int, help="maximum optimiser iterations")
    g.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="where to fit (default auto: CUDA when present)"
    )
    g.add_argument("--config", help="TOML or YAML file with the same option names (CLI flags override)")


# --------------------------------------------------------------------------------------------
# config files


_ALIGN_KEYS = ("align_to", "window", "bin_size", "condition", "epoch", "trials", "transform", "smooth")
_SOURCE_KEYS = ("asset", "api_url", "cache_dir", "download", "timeout", "retries")
_FIT_KEYS = ("rank", "rnn_dim", "likelihood", "max_iters", "seed", "device")


def _read_config_file(path: str) -> dict[str, Any]:
    """Read a flat TOML/YAML config (sections ``[align]``, ``[model]``, ``[fit]`` are flattened)."""
    from nwb_ltr.errors import ConfigError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}; check the --config path")
    text = file.read_text()
    try:
        if file.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as exc:  # parse errors of either format
        raise ConfigError(
            f"cannot parse config file {file}: {str(exc).splitlines()[0]}; fix the syntax"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {file} must hold a mapping of option names to values")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in ("align", "source", "model", "fit"):
            flat.update(value)
        else:
            flat[key.replace("-", "_")] = value
    return flat


def _merge_config(args: argparse.Namespace, *, keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``--config`` values under CLI flags; return (known options, model/fit overrides)."""
    from nwb_ltr.config import FitConfig, ModelConfig, from_dict
    from nwb_ltr.errors import ConfigError

    file_values = _read_config_file(args.config) if getattr(args, "config", None) else {}
    model_fields = set(ModelConfig.__dataclass_fields__)
    fit_fields = set(FitConfig.__dataclass_fields__)
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in file_values.items():
        if key in keys:
            options[key] = value
        elif key in model_fields or key in fit_fields:
            overrides[key] = value
        else:
            valid = ", ".join(sorted(set(keys) | model_fields | fit_fields))
            raise ConfigError(f"unknown config key {key!r} in {args.config}; valid keys: {valid}")
    # type-check the model/fit overrides now, so errors name the key before any work is done
    from_dict(ModelConfig, {k: v for k, v in overrides.items() if k in model_fields})
    from_dict(FitConfig, {k: v for k, v in overrides.items() if k in fit_fields and k not in model_fields})
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            options[key] = value
    if "window" in options:
        options["window"] = tuple(options["window"])
    if getattr(args, "static_rank", None) is not None:  # a model field with its own flag
        overrides["static_rank"] = args.static_rank
    return options, overrides


# --------------------------------------------------------------------------------------------
# commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from nwb_ltr.simulate import simulate_session

    out = Path(args.out)
    if out.exists() and not args.force:
        from nwb_ltr.errors import OutputError

        raise OutputError(f"output file already exists: {out}; pass --force to replace it")
    t0 = time.perf_counter()
    session = simulate_session(
        out, planted_rank=args.planted_rank, n_trials=args.trials, n_units=args.units, seed=args.seed
    )
    kind = (
        f"planted rank-{args.planted_rank} RNN"
        if args.planted_rank
        else "task-trained teacher RNN (BL/AD/WO)"
    )
    nwbfile = session.nwbfile
    print(
        f"wrote {out}  ({kind}; {len(nwbfile.trials)} trials, {len(nwbfile.units)} units, seed {args.seed}, {time.perf_counter() - t0:.1f} s)"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from nwb_ltr import _dandi

    src = args.source
    if _dandi.is_dandi_source(src) and _dandi.parse_source(src).asset_path is None and not args.asset:
        parsed = _dandi.parse_source(src)
        assets = _dandi.list_assets(
            parsed.dandiset_id, parsed.version, **_source_kwargs(args, network_only=True)
        )
        version = assets[0].version if assets else (parsed.version or "draft")
        print(f"dandiset {parsed.dandiset_id} ({version}): {len(assets)} NWB assets")
        for a in assets:
            print(f"  {a.path}  ({a.size / 1e6:.1f} MB)")
        print("choose one with: nwb_ltr inspect DANDI:<id>/<asset path>  (or --asset PATH)")
        return 0
    from nwb_ltr.data import open_session
    from nwb_ltr.inspection import summarize_session

    with open_session(src, **_source_kwargs(args)) as nwbfile:
        print(summarize_session(nwbfile).to_text())
    return 0


def _source_kwargs(args: argparse.Namespace, *, network_only: bool = False) -> dict[str, Any]:
    keys = ("api_url", "timeout", "retries") if network_only else _SOURCE_KEYS
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) not in (None, False)}


def cmd_fit(args: argparse.Namespace) -> int:
    from nwb_ltr.pipeline import run_fit

    keys = (*_ALIGN_KEYS, *_SOURCE_KEYS, *_FIT_KEYS)
    options, overrides = _merge_config(args, keys=keys)
    output = Path(args.output) if args.output else None
    run = run_fit(
        args.source,
        output=output,
        force=args.force,
        dry_run=args.dry_run,
        resume=args.resume,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.no_progress and not getattr(args, "quiet", False),
        overrides=overrides,
        **options,
    )
    data = run.data
    shape = " × ".join(f"{data.sizes[d]} {d}s" for d in data.dims)
    print(run.alignment.describe())
    print(f"tensor: {shape}")
    if args.dry_run:
        fit_settings = {k: options.get(k) for k in _FIT_KEYS if options.get(k) is not None}
        print(
            f"fit settings: {fit_settings or 'defaults'}{'; overrides: ' + str(overrides) if overrides else ''}"
        )
        print("dry run: nothing fitted or written")
        return 0
    result = run.result
    assert result is not None
    m = result.metrics
    rows = [
        ("output", str(run.output)),
        ("tensor", shape),
        (
            "rank / rnn size",
            f"{result.rank}{f' + {result.static_rank} static' if result.static_rank else ''} / {result.rnn_dim}",
        ),
        ("iterations", f"{m.get('n_iters')} (best {m.get('best_iter')}, {m.get('stopped_reason')})"),
        ("loss train/val/test", " / ".join(_fmt(m.get(k)) for k in ("train_loss", "val_loss", "test_loss"))),
    ]
    if m.get("test_bits_per_spike") is not None:
        rows.append(("test bits/spike", _fmt(m.get("test_bits_per_spike"))))
    if m.get("test_r2") is not None:
        rows.append(("test R²", _fmt(m.get("test_r2"))))
    rows.append(("wall time", f"{run.seconds:.1f} s"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def cmd_select(args: argparse.Namespace) -> int:
    from nwb_ltr.pipeline import run_select

    keys = (*_ALIGN_KEYS, *_SOURCE_KEYS, "likelihood", "max_iters", "device")
    options, overrides = _merge_config(args, keys=keys)
    run = run_select(
        args.source,
        ranks=args.ranks,
        rnn_dims=args.rnn_dims,
        seeds=args.seeds,
        folds=args.folds,
        tolerance=args.tolerance,
        warm_start=args.warm_start,
        scheduler=args.scheduler,
        workers=args.workers,
        output=Path(args.output) if args.output else None,
        force=args.force,
        sweep_dir=args.sweep_dir,
        save_all=args.save_all,
        progress=not args.no_progress and not getattr(args, "quiet", False),
        overrides=overrides,
        **options,
    )
    print(run.summary())
    return 0 if run.ok else EXIT_ERROR


def cmd_show(args: argparse.Namespace) -> int:
    from nwb_ltr.report import show_results

    report = show_results(args.results, png=args.png, html=args.html)
    print(report.text)
    for path in report.files:
        print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nwb_ltr.pipeline import run_demo

    kwargs: dict[str, Any] = {}
    if args.max_iters is not None:
        kwargs["max_iters"] = args.max_iters
    if args.rank is not None:
        kwargs["rank"] = args.rank
    run = run_demo(
        args.out,
        seed=args.seed,
        progress=not args.no_progress and not getattr(args, "quiet", False),
        **kwargs,
    )
    m = run.fit.result.metrics if run.fit.result is not None else {}
    print(f"simulated session : {run.session}")
    print(f"results (NWB)     : {run.results}")
    print(f"figure (PNG)      : {run.figure}")
    print(
        f"fit: rank {m.get('rank', kwargs.get('rank', 3))}, {m.get('n_iters')} iterations, "
        f"test bits/spike {_fmt(m.get('test_bits_per_spike'))}, {run.fit.seconds:.0f} s"
    )
    print(f"next: nwb_ltr show {run.results}")
    return 0


# --------------------------------------------------------------------------------------------
# parser and entry point


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every verb."""
    parser = argparse.ArgumentParser(
        prog="nwb_ltr",
        description="Fit low-tensor-rank RNNs (ltrRNN) to motor-learning sessions in NWB / DANDI.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("simulate", help="write a synthetic learning session (BL/AD/WO) as NWB")
    p.add_argument("out", metavar="OUT.nwb")
    p.add_argument("--planted-rank", type=int, help="plant an exact low-tensor-rank RNN of this rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=_trial_counts, default=(50, 100, 100), metavar="BL,AD,WO")
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--force", action="store_true", help="replace an existing file")
    _add_common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("inspect", help="show what a session has and suggest alignment choices")
    p.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    _add_source_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("fit", help="align, fit an ltrRNN and write the results NWB file")
    p.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    p.add_argument("-o", "--output", metavar="OUT.nwb", help="results file (default: DANDI-style name in .)")
    p.add_argument("--force", action="store_true", help="replace an existing output (atomically)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this output")
    p.add_argument("--checkpoint-dir", help="checkpoint folder (default: .<output>.checkpoints beside it)")
    p.add_argument("--dry-run", action="store_true", help="align and show the settings, fit nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_source_options(p)
    _add_align_options(p)
    _add_model_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("select", help="cross-validated rank / size selection over seeds and folds")
    p.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    p.add_argument("--ranks", type=_int_range, default=[1, 2, 3, 4, 5, 6], help="e.g. 1-6 (default)")
    p.add_argument("--rnn-dims", type=_int_range, help="e.g. 50,200 (default: the fit default)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per candidate (default 3)")
    p.add_argument("--folds", type=int, default=2, help="cross-validation folds (default 2)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="relative loss difference treated as none by the one-SE rule, e.g. 0.001 (default 0)",
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="fit the ranks from the top down, each starting from the rank above (see README)",
    )
    p.add_argument(
        "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (default: local processes)"
    )
    p.add_argument("--workers", type=int, help="local worker processes (default: number of cores)")
    p.add_argument("--sweep-dir", help="folder keeping finished candidates (rerun to resume)")
    p.add_argument("--save-all", action="store_true", help="write every candidate fit into the output too")
    p.add_argument("-o", "--output", metavar="OUT.nwb")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_source_options(p)
    _add_align_options(p)
    _add_model_options(p, sweep=True)
    _add_common(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("show", help="summarise a results file and write a PNG/HTML report")
    p.add_argument("results", metavar="RESULTS.nwb")
    p.add_argument("--png", help="PNG report path (default: <results>.png)")
    p.add_argument("--html", help="also write a self-contained HTML report")
    _add_common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("demo", help="simulate a learning session, fit it, write NWB + figure")
    p.add_argument("--out", default="nwb_ltr_demo", help="output folder (default ./nwb_ltr_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", type=int)
    p.add_argument("--max-iters", type=int)
    p.add_argument("--no-progress", action="store_true")
    _add_common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(levelname)s: %(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"
        )
    )
    root = logging.getLogger("nwb_ltr")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nwb_ltr`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from nwb_ltr import __version__

        print(f"nwb_ltr {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug, bool(getattr(args, "quiet", False)))
    func: Callable[[argparse.Namespace], int] = args.func
    if debug:
        return func(args)
    try:
        return func(args)
    except KeyboardInterrupt:
        hint = ""
        if args.command == "fit":
            hint = "; the last checkpoint is kept: rerun the same command with --resume to continue"
        elif args.command == "select":
            hint = "; finished candidates are kept: rerun the same command to continue"
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every error becomes one line here
        from nwb_ltr.errors import NwbLtrError

        if isinstance(exc, NwbLtrError):
            message = str(exc)
        elif isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
        else:
            message = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        print(f"error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
