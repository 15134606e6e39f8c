"""`opendata-stats --help`: fast (imports no command module), the commands in workflow order with whole one-line
summaries, and a help text on every option of every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from deploy.cli import COMMANDS, cli

#: The order a first-time user runs them in.
WORKFLOW = ["generate", "serve", "process", "fit", "scan-mass", "patchset", "fetch-likelihoods", "scan-patchset", "run"]
#: Packages that cost seconds to import; `--help` must import none of them.
HEAVY = {"jax", "pyhf", "coffea", "dask", "distributed", "uproot", "awkward", "numpy", "matplotlib", "cabinetry"}
HELP = "from deploy.cli import main; main(['--help'])"


def _help_command() -> list[str]:
    script = Path(sys.executable).with_name("opendata-stats")
    return [str(script), "--help"] if script.exists() else [sys.executable, "-c", HELP]


def test_help_lists_the_commands_in_workflow_order_with_whole_summaries_on_one_line() -> None:
    done = subprocess.run(_help_command(), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("Commands:\n", 1)[1].splitlines()
    rows = [line.split(None, 1) for line in section if line.strip()]
    assert [name for name, _ in rows] == list(COMMANDS)  # one line each: a wrapped summary would add a row
    assert [name for name in COMMANDS if name in WORKFLOW] == WORKFLOW
    for name, summary in rows:
        assert summary == COMMANDS[name].summary, name
        assert len(f"  {max(COMMANDS, key=len)}  {summary}") <= 78, name


def test_help_imports_no_command_module_and_answers_within_a_second() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", HELP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "deploy.cli" in imported
    assert not {name.split(".")[0] for name in imported} & HEAVY, sorted(imported)
    assert not {name for name in imported if name.startswith("deploy.cli_")}
    # Best of three, so that a busy machine does not fail it; before lazy listing it took 5-6 s.
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(_help_command(), capture_output=True, check=True, timeout=60)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 1.0, seconds


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_of_every_command_says_what_it_does(name: str) -> None:
    ctx = click.Context(cli, info_name="opendata-stats")
    command = cli.get_command(ctx, name)
    assert command is not None and command.name == name
    assert (command.help or "").strip(), f"{name} has no help"
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            words = re.sub(r"\[[^\]]*\]", "", param.help or "").strip(" .")
            assert words, f"{name} {'/'.join(param.opts)}: no help text beyond {param.help!r}"


def test_a_command_runs_its_own_help() -> None:
    from click.testing import CliRunner

    done = CliRunner().invoke(cli, ["scan-mass", "--help"])
    assert done.exit_code == 0 and "--masses" in done.output
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2
