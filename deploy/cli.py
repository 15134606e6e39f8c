"""The ``opendata-stats`` command: a thin click layer over the library API.

Each group of commands lives in its own module (``cli_generate``, ``cli_processing``, ``cli_stats``,
``cli_likelihoods``, ``cli_services``, ``cli_pipeline``); this module assembles them and turns the project's exceptions into one-line errors.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from deploy.errors import DeployError
from processors.errors import ProcessingError
from stats.errors import StatsError

__all__ = ["DeployError", "cli", "main"]

#: Which module defines each command (in its ``commands`` list), so running one imports only that module.
COMMAND_OF = {
    "generate": "deploy.cli_generate",
    "process": "deploy.cli_processing",
    "fit": "deploy.cli_stats",
    "scan-mass": "deploy.cli_stats",
    "patchset": "deploy.cli_likelihoods",
    "scan-patchset": "deploy.cli_likelihoods",
    "serve": "deploy.cli_services",
    "run": "deploy.cli_pipeline",
}

#: Exit status for bad input (missing file, invalid workspace, wrong flag value).
EXIT_BAD_INPUT = 2
#: Exit status for a run that completed but lists failures (failed chunks, failed scan points).
EXIT_PARTIAL = 1


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs (or help lists it).

    Dask's local worker processes are spawned and re-import the console script; importing every command module
    (pyhf, lmfit, cabinetry, matplotlib) there would cost each worker seconds for nothing.
    """

    def _modules(self) -> dict[str, Any]:
        loaded = {}
        for name in dict.fromkeys(COMMAND_OF.values()):
            loaded.update({command.name: command for command in importlib.import_module(name).commands})
        return loaded

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._modules()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        module = COMMAND_OF.get(cmd_name)
        if module is not None:
            for command in importlib.import_module(module).commands:
                if command.name == cmd_name:
                    return command
        return self._modules().get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="opendata-stats")
def cli() -> None:
    """ATLAS open-data H->yy analysis: process on Dask, fit, build workspaces, scan likelihoods.

    Start with `opendata-stats run`, which does everything on generated data.
    """


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
