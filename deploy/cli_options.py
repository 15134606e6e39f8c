"""Options shared by the ``opendata-stats`` commands, and the one step that turns a command's flags into settings.

Every command takes ``--config``; a flag whose value is not given (None) leaves the config's value, and the help
text names the config key instead of restating its default (the packaged ``default.yaml`` holds the defaults).
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

from deploy.config import Configuration, configure

F = Callable[..., Any]


class DegreeType(click.ParamType):
    """A polynomial degree: an integer, or ``auto`` for the F-test's choice (the range is the schema's)."""

    name = "degree"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


DEGREE = DegreeType()


class LikelihoodsType(click.ParamType):
    """Published likelihoods: a local tarball or directory, or a HEPData source (URL, resource id, ``ins`` record,
    DOI; a URL may end in ``#sha256=HEX``) fetched once into the cache (:func:`stats.fetch.cache_directory`).

    Args:
        exists: refuse a local path that does not exist here, before any work starts (otherwise the command's
            loader reports it).
    """

    name = "likelihoods"

    def __init__(self, *, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> pathlib.Path:
        completing = ctx is not None and ctx.resilient_parsing  # shell completion: never download
        if isinstance(value, pathlib.Path) or pathlib.Path(value).exists() or completing:
            return pathlib.Path(value)
        from stats.fetch import cache_directory, fetch_likelihoods, is_remote

        if not is_remote(value):
            if self.exists:
                self.fail(f"{value!r} is neither a file or directory nor a HEPData URL, resource id, record or DOI",
                          param, ctx)
            return pathlib.Path(value)
        fetched = fetch_likelihoods(value, cache_directory(value))
        click.echo(f"likelihoods {fetched.source} (sha256 {fetched.sha256}): {fetched.directory}", err=True)
        return fetched.directory


def config_option(command: F) -> F:
    """``--config FILE``: settings over the packaged defaults; flags override them."""
    return click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
        help="Config file (YAML; every key and its default: deploy/facilities/default.yaml); flags override it.",
    )(command)


def workers_option(*, in_process: bool, default: str = "the config's cluster") -> Callable[[F], F]:
    """``--workers N``: N local Dask worker processes, in every command; ``0`` (where ``in_process``) runs the
    work in this process without Dask."""
    zero = "; 0: in this process, without Dask" if in_process else ""
    return click.option("--workers", type=click.IntRange(min=0 if in_process else 1),
                        help=f"Local Dask worker processes (default: {default}){zero}.")


def scheduler_option(command: F) -> F:
    """``--scheduler ADDRESS``: an existing Dask scheduler."""
    return click.option("--scheduler", help="Address of an existing Dask scheduler (e.g. tls://localhost:8786).")(
        command)


def settings_from_flags(ctx: click.Context, keys: Mapping[str, str]) -> Configuration:
    """The command's configuration: the defaults, its ``--config`` file, then its flags, in one step.

    Args:
        ctx: the running command's context (its parameters include ``config_path``).
        keys: parameter name -> dotted config key it overrides (e.g. ``{"degree": "fit.degree"}``).

    Returns:
        The validated configuration, each value's origin naming the flag that set it.

    Raises:
        DeployError: a bad config file or value (one line naming the key).
    """
    options = {param.name: param for param in ctx.command.params}
    overrides = {key: ctx.params.get(name) for name, key in keys.items()}
    flags = {key: max(options[name].opts, key=len) for name, key in keys.items()}
    return configure(ctx.params.get("config_path"), overrides, flags=flags)


@contextlib.contextmanager
def dask_or_local(configuration: Configuration, workers: int | None, scheduler: str | None, *,
                  in_process_by_default: bool = False) -> Iterator[Any]:
    """A Dask client as the flags ask (``--workers 0``: None, in this process), the config's cluster otherwise.

    Args:
        configuration: the command's configuration (its ``cluster`` section).
        workers: ``--workers``.
        scheduler: ``--scheduler``.
        in_process_by_default: without either flag, work in this process instead of starting the config's cluster.
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    if workers == 0 or (in_process_by_default and workers is None and scheduler is None):
        yield None
        return
    from deploy.clusters import dask_client

    with dask_client(configuration.settings.cluster, workers=workers, scheduler=scheduler) as client:
        yield client
