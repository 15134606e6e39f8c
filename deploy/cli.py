"""The ``opendata-stats`` command: a thin click layer over the library API.

Each group of commands lives in its own module (``cli_generate``, ``cli_processing``, ``cli_stats``,
``cli_likelihoods``, ``cli_services``, ``cli_pipeline``); this module lists them (:data:`COMMANDS`), imports one only
when it runs, and turns the project's exceptions into one-line errors.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

import click

from deploy.errors import DeployError
from processors.errors import ProcessingError
from stats.errors import StatsError

__all__ = ["COMMANDS", "DeployError", "cli", "main"]


class Entry(NamedTuple):
    """Where a command is defined (``module:attribute``) and its one-line summary in ``opendata-stats --help``."""

    target: str
    summary: str


#: The commands in the order of the workflow, each with its one-line summary. ``opendata-stats --help`` lists them
#: from this table without importing any command module; running a command (or its ``--help``) imports only its
#: module. A summary fits one line of an 80-column terminal (57 characters beside the longest command name).
COMMANDS = {
    "generate": Entry("deploy.cli_generate:generate", "Write GamGam ROOT files with an injected H->yy signal"),
    "serve": Entry("deploy.cli_services:serve", "Serve a folder of ROOT files over root:// and https://"),
    "process": Entry("deploy.cli_processing:process", "Select diphoton events on Dask; write m_yy histograms"),
    "fit": Entry("deploy.cli_stats:fit", "Fit the m_yy spectrum: background, mu, significance"),
    "scan-mass": Entry("deploy.cli_stats:scan_mass", "Local significance and p0 over a grid of Higgs masses"),
    "diagnostics": Entry("deploy.cli_diagnostics:diagnostics", "Pulls, impacts on the POI and correlations of a fit"),
    "patchset": Entry("deploy.cli_likelihoods:patchset", "Inspect published likelihoods: labels, patches, digests"),
    "fetch-likelihoods": Entry("deploy.cli_likelihoods:fetch",
                               "Download HEPData likelihoods, check sha256, extract"),
    "scan-patchset": Entry("deploy.cli_likelihoods:scan_patchset", "CLs of each patch of a patchset; exclusion contour"),
    "limits": Entry("deploy.cli_likelihoods:limits", "95% CL upper limits on mu per patch; Brazil plot, map"),
    "run": Entry("deploy.cli_pipeline:run", "The whole pipeline on generated data, with a report"),
}

#: Exit status for bad input (missing file, invalid workspace, wrong flag value).
EXIT_BAD_INPUT = 2


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs or shows its own help.

    ``opendata-stats --help`` lists :data:`COMMANDS` in their order with their summaries and imports nothing
    (the command modules import pyhf, coffea, dask and uproot: seconds). Dask's local worker processes are spawned
    and re-import the console script, so they do not pay for the commands either.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return self.commands.get(cmd_name)
        module, attribute = entry.target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, entry.summary) for name, entry in COMMANDS.items()]
        rows += [(name, command.get_short_help_str())
                 for name, command in self.commands.items() if name not in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="opendata-stats")
def cli() -> None:
    """ATLAS open-data H->yy analysis: process on Dask, fit, build workspaces, scan likelihoods.

    Start with `opendata-stats run`, which does everything on generated data.
    """


def use_file_backend() -> None:
    """Have matplotlib draw with its non-interactive Agg backend, unless ``MPLBACKEND`` names another.

    The commands write figures to files and never show them; an interactive backend would want a display. Set
    in the environment, before anything imports matplotlib, so local Dask workers inherit it too.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")


def main(argv: list[str] | None = None) -> None:
    """Run the command line, printing the project's errors as one line each."""
    use_file_backend()
    try:
        status = cli.main(args=argv, prog_name="opendata-stats", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (ProcessingError, StatsError, DeployError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    if isinstance(status, int) and status:
        sys.exit(status)


if __name__ == "__main__":
    main()
