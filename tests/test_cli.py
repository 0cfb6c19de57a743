"""CLI: fast --help without heavy imports, one-line errors with exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nwb_ltr.cli import _int_range, build_parser, main

VERBS = ["simulate", "inspect", "fit", "select", "show", "demo"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nwb_ltr.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_import_cli_loads_no_heavy_modules() -> None:
    code = (
        "import sys, nwb_ltr.cli\n"
        "heavy = [m for m in ('torch', 'pynwb', 'h5py', 'numpy', 'hdmf', 'xarray') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_of_every_verb_is_light() -> None:
    code = (
        "import sys\nfrom nwb_ltr.cli import main\n"
        f"for verb in {VERBS!r}:\n"
        "    try:\n        main([verb, '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'pynwb', 'h5py') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in out.stdout or out.stdout.rstrip().endswith("HEAVY=")
    for option in ("--align-to", "--rank", "--dry-run", "--resume", "--config", "--device"):
        assert option in out.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_debug(verb: str) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[verb]  # type: ignore[union-attr]
    assert "--debug" in sub.format_help()


def test_missing_file_is_one_line_and_exit_1(tmp_path) -> None:
    missing = tmp_path / "nope.nwb"
    proc = run_cli("inspect", str(missing))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr


def test_debug_shows_traceback(tmp_path) -> None:
    proc = run_cli("inspect", str(tmp_path / "nope.nwb"), "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys) -> None:
    import nwb_ltr

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nwb_ltr {nwb_ltr.__version__}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-6", [1, 2, 3, 4, 5, 6]), ("1,2,5", [1, 2, 5]), ("1-3,8", [1, 2, 3, 8]), ("4", [4])],
)
def test_int_range(text: str, expected: list[int]) -> None:
    assert _int_range(text) == expected


def test_bad_int_range_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["select", "x.nwb", "--ranks", "a-b"])
    assert exc.value.code == 2
    assert "expected integers like 1-6 or 1,2,5, got 'a-b'" in capsys.readouterr().err


def test_config_unknown_key_names_it(tmp_path, capsys) -> None:
    config = tmp_path / "fit.toml"
    config.write_text("rank = 3\nbogus_key = 1\n")
    code = main(["fit", str(tmp_path / "x.nwb"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: unknown config key 'bogus_key' in ")
    assert err.count("\n") == 1


def test_config_wrong_type_names_key(tmp_path, capsys) -> None:
    config = tmp_path / "fit.yaml"
    config.write_text("lr: fast\n")
    code = main(["fit", str(tmp_path / "x.nwb"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: config key 'lr' must be a number, got str\n"
