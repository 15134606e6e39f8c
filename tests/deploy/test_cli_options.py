"""Options every command shares: --config everywhere, --workers with one meaning, serve's missing daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.cli import COMMANDS, cli

DASK_COMMANDS = ["process", "scan-mass", "scan-patchset", "limits", "run"]


def help_of(command: str) -> dict[str, str]:
    """Option -> help text of a command (click's own record, not the rendered page)."""
    ctx = cli.make_context("opendata-stats", [command, "--help"], resilient_parsing=True)
    found = cli.get_command(ctx, command)
    return {max(p.opts, key=len): p.help or "" for p in found.params if isinstance(p, __import__("click").Option)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_accepts_a_config_file(command: str) -> None:
    assert "--config" in help_of(command)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_rejects_a_bad_config_file_in_one_line(command: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("fit: {degree: eleven}\n")
    args = {"generate": ["--out", str(tmp_path / "g")], "process": [str(tmp_path / "x.root"), "--out", str(tmp_path)],
            "fit": [str(tmp_path)], "scan-mass": [str(tmp_path)], "patchset": [str(tmp_path)],
            "scan-patchset": [str(tmp_path), "--out", str(tmp_path / "o.json")], "serve": [str(tmp_path)],
            "limits": [str(tmp_path), "--out", str(tmp_path / "l.json")],
            "fetch-likelihoods": ["1408476", "--out", str(tmp_path / "likelihoods")],
            "run": ["--out", str(tmp_path / "r")], "diagnostics": [str(tmp_path), "--out", str(tmp_path / "d")]}[command]
    done = subprocess.run([sys.executable, "-m", "deploy.cli", command, *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "fit.degree" in done.stderr, done.stderr


@pytest.mark.parametrize("command", DASK_COMMANDS)
def test_workers_means_local_dask_worker_processes_in_every_command(command: str) -> None:
    text = help_of(command)["--workers"]
    assert text.startswith("Local Dask worker"), text


@pytest.mark.parametrize("command", ["run", "scan-patchset", "limits"])
def test_workers_zero_is_refused_where_the_work_needs_dask(command: str, tmp_path: Path) -> None:
    args = {"run": ["--out", str(tmp_path)], "scan-patchset": [str(tmp_path), "--out", str(tmp_path / "o.json")],
            "limits": [str(tmp_path), "--out", str(tmp_path / "l.json")]}
    done = CliRunner().invoke(cli, [command, *args[command], "--workers", "0"])
    assert done.exit_code == 2 and "--workers" in done.output


def test_scan_mass_with_workers_zero_runs_in_this_process(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stats"))
    from _toys import make_toy

    toy = make_toy(seed=1, signal_yield=1800.0)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"lumi_fb": 36.1, "cutflow": {}, "mass": {"edges": toy.edges.tolist(), "counts": toy.counts.tolist()}}))
    done = CliRunner().invoke(cli, ["scan-mass", str(tmp_path), "--workers", "0", "--masses", "125", "--degree", "4"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "mass_scan.json").read_text())["points"][0]["mass"] == 125.0


def test_serve_without_the_xrootd_daemon_names_the_system_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "serve", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={"PATH": str(empty), "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0
    assert "xrootd-server" in done.stderr


def test_readme_documents_the_options_that_exist() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `opendata-stats ")]
    import re

    for row in rows:
        command = row.split("`")[1].split()[1]
        documented = set(re.findall(r"(--[a-z][a-z0-9-]*)", row.split("`")[1]))
        ctx = cli.make_context("opendata-stats", [command, "--help"], resilient_parsing=True)
        existing = {opt for p in cli.get_command(ctx, command).params for opt in [*p.opts, *p.secondary_opts]}
        assert documented <= existing | {"--help"}, (command, documented - existing)
    assert "xrootd-server" in readme
