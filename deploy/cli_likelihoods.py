"""``opendata-stats patchset`` and ``opendata-stats scan-patchset``: published likelihoods (pyhf patchsets)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import click

from deploy.cli_options import (LikelihoodsType, config_option, dask_or_local, scheduler_option, settings_from_flags,
                                workers_option)
from stats.limit_plots import plot_exclusion_contour
from stats.fetch import DEFAULT_TIMEOUT, HEPDATA_URL, fetch_likelihoods
from stats.hepdata import load_likelihoods
from stats.likelihoods import default_backend, describe, find_patch, select_patches
from stats.patchscan import scan_patches


@click.command()
@click.argument("likelihoods", type=LikelihoodsType())
@config_option
@click.option("--patch", "patch_key",
              help="Show one patch: its name, its values (900,250), or a part of its name (650_0).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def patchset(ctx: click.Context, likelihoods: pathlib.Path, patch_key: str | None, as_json: bool,
             config_path: pathlib.Path | None) -> None:
    """Inspect LIKELIHOODS: description, labels, digests, patches, or one patch.

    LIKELIHOODS is a .tar.gz or a directory, or a HEPData source as `fetch-likelihoods` takes it (fetched once
    into ~/.cache/opendata-stats).
    """
    settings_from_flags(ctx, {})  # a --config file is validated like every command's; nothing here depends on it
    loaded = load_likelihoods(likelihoods)
    if patch_key:
        patch = find_patch(loaded.patchset, patch_key)
        info = {"name": patch.name, "values": list(patch.values), "operations": [op["op"] + " " + op["path"] for op in patch.patch]}
    else:
        info = describe(loaded.patchset)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for key, value in info.items():
        if key == "patches":
            click.echo(f"patches ({len(value)}):")
            for row in value:
                click.echo(f"  {row['name']}  " + ",".join(f"{v:g}" for v in row["values"]))
        elif isinstance(value, (list, dict)) and key != "values":
            click.echo(f"{key}:")
            for item in value.items() if isinstance(value, dict) else enumerate(value):
                click.echo(f"  {item[0]}: {item[1]}" if isinstance(value, dict) else f"  {item[1]}")
        else:
            click.echo(f"{key}: {value}")


def patches_on_dask(command: Callable) -> Callable:
    """LIKELIHOODS, the patches chosen (``--patch``, ``--values``), ``--config`` and the Dask cluster's options."""
    for decorate in reversed((
            click.argument("likelihoods", type=LikelihoodsType()),
            click.option("--patch", "names", multiple=True, help="Patch name (repeatable); default all."),
            click.option("--values", "values", multiple=True, help="Patch values like 900,250 (repeatable)."),
            config_option, workers_option(in_process=False), scheduler_option)):
        command = decorate(command)
    return command


def interpolation_options(command: Callable) -> Callable:
    """``--normsys`` and ``--histosys``: the interpolation codes of the hypotests."""
    for decorate in reversed((
            click.option("--normsys", type=click.Choice(["code1", "code4"]),
                         help="normsys interpolation [config: patchset.normsys]."),
            click.option("--histosys", type=click.Choice(["code0", "code2", "code4p"]),
                         help="histosys interpolation [config: patchset.histosys]."))):
        command = decorate(command)
    return command


#: ``scan-patchset``'s flags that set a config key: parameter name -> key.
PATCHSET_FLAGS = {"backend": "patchset.backend", "mu": "patchset.mu", "test_stat": "patchset.test_stat",
                  "normsys": "patchset.normsys", "histosys": "patchset.histosys", "timeout": "patchset.timeout"}


@click.command("scan-patchset")
@patches_on_dask
@click.option("--backend", type=click.Choice(["numpy", "jax"]),
              help="jax: the compiled engine (one compiled likelihood for all patches, ~100x faster); "
                   "numpy: plain pyhf per patch [config: patchset.backend; auto: jax if installed].")
@click.option("--mu", type=float, help="Signal strength tested [config: patchset.mu].")
@click.option("--test-stat", type=click.Choice(["qtilde", "q", "q0"]),
              help="Test statistic of the hypotest [config: patchset.test_stat].")
@interpolation_options
@click.option("--timeout", type=float, help="Per-point time limit in seconds [config: patchset.timeout].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Result JSON (rerun with the same file to resume).")
@click.option("--no-plot", is_flag=True, help="Skip the exclusion contour.")
@click.pass_context
def scan_patchset(ctx: click.Context, likelihoods: pathlib.Path, names: tuple[str, ...], values: tuple[str, ...],
                  workers: int | None, scheduler: str | None, backend: str | None, out: pathlib.Path, no_plot: bool,
                  **_: object) -> None:
    """CLs of patches of LIKELIHOODS on Dask; write --out JSON and, for a 2D grid, the exclusion contour.

    LIKELIHOODS is a .tar.gz or a directory, or a HEPData source as `fetch-likelihoods` takes it (fetched once
    into ~/.cache/opendata-stats).
    """
    configuration = settings_from_flags(ctx, PATCHSET_FLAGS)
    if backend == "jax" and default_backend() != "jax":
        raise click.BadParameter("jax is not installed (pip install 'opendata-stats[jax]')", param_hint="--backend")
    loaded = load_likelihoods(likelihoods)
    chosen = select_patches(loaded.patchset, [*names, *values])
    settings = configuration.settings.patchset.hypotest_settings()
    timeout = configuration.settings.patchset.timeout
    from tqdm import tqdm

    with dask_or_local(configuration, workers, scheduler) as client, tqdm(total=len(chosen), unit="patch") as bar:
        result = scan_patches(loaded, client, patches=chosen, settings=settings, timeout=timeout, out=out,
                              progress=lambda point: bar.update(1))
    ok = len(result.results) - len(result.failed)
    click.echo(f"{ok}/{len(result.results)} patches ok in {result.wall_time:.1f} s -> {out}")
    for point in result.failed:
        click.echo(f"failed {point.name}: {point.error}")
    for point in result.results:  # where pyhf's default fit would report another CLs: which minimum is lower
        if point.lowered_summary():
            click.echo(point.lowered_summary())
    if not no_plot and len(loaded.patchset.labels) == 2 and ok >= 3:
        for path in plot_exclusion_contour(result.results, loaded.patchset.labels, out.with_suffix("")):
            click.echo(f"wrote {path}")
    if result.failed:
        ctx.exit(1)


@click.command("limits")
@patches_on_dask
@click.option("--backend", type=click.Choice(["numpy", "jax"]),
              help="jax: the compiled engine; numpy: plain pyhf per hypotest [config: patchset.backend].")
@click.option("--test-stat", type=click.Choice(["qtilde", "q"]),
              help="Test statistic of the hypotests [config: patchset.test_stat].")
@interpolation_options
@click.option("--timeout", type=float, help="Per-hypotest time limit in seconds [config: patchset.timeout].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Result JSON (rerun with the same file to resume).")
@click.option("--no-plot", is_flag=True, help="Skip the plots.")
@click.pass_context
def limits(ctx: click.Context, likelihoods: pathlib.Path, names: tuple[str, ...], values: tuple[str, ...],
           workers: int | None, scheduler: str | None, backend: str | None, out: pathlib.Path, no_plot: bool,
           **_: object) -> None:
    """95% CL CLs upper limits on the signal strength of patches of LIKELIHOODS, each patch a Dask task.

    Writes --out JSON (observed limit, expected median and +-1/2 sigma per patch) and, for a 1D grid, the
    limits against its label with the expected bands (Brazil plot); for a 2D grid, the map of the observed limits
    with the observed and expected mu_up = 1 contours.
    """
    from deploy.analysis import limit_likelihoods
    from stats.limits import CURVES

    configuration = settings_from_flags(ctx, {key: value for key, value in PATCHSET_FLAGS.items() if key != "mu"})
    if backend == "jax" and default_backend() != "jax":
        raise click.BadParameter("jax is not installed (pip install 'opendata-stats[jax]')", param_hint="--backend")
    settings = configuration.settings.patchset.hypotest_settings()
    if settings.test_stat not in ("qtilde", "q"):
        raise click.BadParameter(f"upper limits need qtilde or q, not {settings.test_stat}", param_hint="--test-stat")
    patches = [*names, *values]
    loaded = load_likelihoods(likelihoods)
    count = len(select_patches(loaded.patchset, patches or None))
    from tqdm import tqdm

    with dask_or_local(configuration, workers, scheduler) as client, tqdm(total=count, unit="patch") as bar:
        result, plotted = limit_likelihoods(loaded, out, client=client, patches=patches, settings=settings,
                                            timeout=configuration.settings.patchset.timeout,
                                            progress=lambda point: bar.update(1), plot=not no_plot)
    ok = len(result.results) - len(result.failed)
    click.echo(f"{ok}/{len(result.results)} patches with limits in {result.wall_time:.1f} s -> {out}")
    for point in result.results:
        if point.status == "ok":
            shown = [f"{name} {value:.4g}" if value is not None else f"{name} none"
                     for name, value in zip(CURVES, [point.observed, *point.expected])]
            click.echo(f"{point.name}: mu_up " + ", ".join(shown))
        else:
            click.echo(f"failed {point.name}: {point.error}")
    for path in plotted["plots"]:
        click.echo(f"wrote {path}")
    if "plot_error" in plotted:
        click.echo(f"no plot: {plotted['plot_error']}")
    if result.failed:
        ctx.exit(1)


@click.command("fetch-likelihoods")
@click.argument("source")
@config_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Directory to extract into: new or empty (a rerun with the same SOURCE reuses it).")
@click.option("--sha256", metavar="HEX", help="The archive's expected SHA-256 (or end a URL in #sha256=HEX); another is refused.")
@click.option("--hepdata", "site", metavar="URL", default=HEPDATA_URL, show_default=True,
              help="HEPData site that resource ids and ins records are looked up on.")
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds the download may take in all.")
@click.pass_context
def fetch(ctx: click.Context, source: str, out_dir: pathlib.Path, sha256: str | None, site: str, timeout: float,
          config_path: pathlib.Path | None) -> None:
    """Download published likelihoods from HEPData, check their SHA-256 and extract them safely into --out.

    \b
    SOURCE is what HEPData or a notebook gives, one of
      https://www.hepdata.net/record/resource/1408476?view=true (a URL),
      1408476 (a resource id),
      ins1755298 (a record: its one HistFactory resource),
      10.17182/hepdata.90607.v3/r3 (a resource DOI).

    The archive is downloaded with pyhf, extracted without absolute paths, `..`, links leaving --out or oversized
    members, and its likelihoods are validated (schema, patchset digest). `scan-patchset` and `run --likelihoods`
    also take SOURCE itself.
    """
    settings_from_flags(ctx, {})  # a --config file is validated like every command's; nothing here depends on it
    fetched = fetch_likelihoods(source, out_dir, sha256=sha256, site=site, timeout=timeout)
    how = "already in" if fetched.reused else "extracted into"
    click.echo(f"{fetched.url}: {fetched.size:,} bytes, sha256 {fetched.sha256}, {how} {fetched.directory}")
    loaded = load_likelihoods(fetched.directory)
    labels = ", ".join(loaded.patchset.labels)
    click.echo(f"{len(loaded.patchset.patches)} patches over ({labels}); background-only digest {loaded.digest}")
    click.echo(f"next: opendata-stats scan-patchset {fetched.directory} --out cls.json")
