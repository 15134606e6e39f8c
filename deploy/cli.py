"""The ``opendata-stats`` command: a thin click layer over the library API.

Each group of commands lives in its own module (``cli_generate``, ``cli_processing``, ``cli_stats``,
``cli_likelihoods``, ``cli_services``, ``cli_pipeline``); this module assembles them and turns the project's exceptions into one-line errors.
"""

from __future__ import annotations

import importlib
import sys

import click

from deploy.errors import DeployError
from processors.errors import ProcessingError
from stats.errors import StatsError

__all__ = ["DeployError", "cli", "main"]

#: Modules that each define a ``commands`` list of click commands, registered in this order.
COMMAND_MODULES = (
    "deploy.cli_generate",
    "deploy.cli_processing",
    "deploy.cli_stats",
    "deploy.cli_likelihoods",
    "deploy.cli_services",
    "deploy.cli_pipeline",
)

#: Exit status for bad input (missing file, invalid workspace, wrong flag value).
EXIT_BAD_INPUT = 2
#: Exit status for a run that completed but lists failures (failed chunks, failed scan points).
EXIT_PARTIAL = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="opendata-stats")
def cli() -> None:
    """ATLAS open-data H->yy analysis: process on Dask, fit, build workspaces, scan likelihoods.

    Start with `opendata-stats run`, which does everything on generated data.
    """


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        for command in module.commands:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the command line, printing the project's errors as one line each."""
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
