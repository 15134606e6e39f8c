"""``opendata-stats patchset`` and ``opendata-stats scan-patchset``: published likelihoods (pyhf patchsets)."""

from __future__ import annotations

import json
import pathlib

import click

from deploy.clusters import dask_client
from stats.contour import plot_exclusion
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, default_backend, describe, find_patch, select_patches
from stats.patchscan import scan_patches


@click.command()
@click.argument("likelihoods", type=click.Path(path_type=pathlib.Path))
@click.option("--patch", "patch_key", help="Show one patch, by name or values (900,250).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def patchset(likelihoods: pathlib.Path, patch_key: str | None, as_json: bool) -> None:
    """Inspect LIKELIHOODS (.tar.gz, directory): description, labels, digests, patches, or one patch."""
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


@click.command("scan-patchset")
@click.argument("likelihoods", type=click.Path(path_type=pathlib.Path))
@click.option("--patch", "names", multiple=True, help="Patch name (repeatable); default all.")
@click.option("--values", "values", multiple=True, help="Patch values like 900,250 (repeatable).")
@click.option("--workers", type=int, help="Local worker processes (default: cores).")
@click.option("--scheduler", help="Address of a running Dask scheduler.")
@click.option("--backend", type=click.Choice(["numpy", "jax"]), default=default_backend,
              show_default="jax if installed",
              help="jax: the compiled engine (one compiled likelihood for all patches, ~100x faster); "
                   "numpy: plain pyhf per patch.")
@click.option("--mu", type=float, default=1.0, show_default=True, help="Signal strength tested.")
@click.option("--test-stat", type=click.Choice(["qtilde", "q", "q0"]), default="qtilde", show_default=True)
@click.option("--normsys", type=click.Choice(["code1", "code4"]), default="code4", show_default=True,
              help="normsys interpolation.")
@click.option("--histosys", type=click.Choice(["code0", "code2", "code4p"]), default="code4p", show_default=True,
              help="histosys interpolation.")
@click.option("--timeout", type=float, help="Per-point time limit in seconds.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Result JSON (rerun with the same file to resume).")
@click.option("--no-plot", is_flag=True, help="Skip the exclusion contour.")
@click.pass_context
def scan_patchset(ctx: click.Context, likelihoods: pathlib.Path, names: tuple[str, ...], values: tuple[str, ...],
                  workers: int | None, scheduler: str | None, backend: str, mu: float, test_stat: str, normsys: str,
                  histosys: str, timeout: float | None, out: pathlib.Path, no_plot: bool) -> None:
    """CLs of patches of LIKELIHOODS on Dask; write --out JSON and, for a 2D grid, the exclusion contour."""
    if backend == "jax" and default_backend() != "jax":
        raise click.BadParameter("jax is not installed (pip install 'opendata-stats[jax]')", param_hint="--backend")
    loaded = load_likelihoods(likelihoods)
    chosen = select_patches(loaded.patchset, [*names, *values])
    settings = HypotestSettings(mu=mu, test_stat=test_stat, normsys=normsys, histosys=histosys, backend=backend)
    from tqdm import tqdm

    with dask_client(workers=workers, scheduler=scheduler) as client, tqdm(total=len(chosen), unit="patch") as bar:
        result = scan_patches(loaded, client, patches=chosen, settings=settings, timeout=timeout, out=out,
                              progress=lambda point: bar.update(1))
    ok = len(result.results) - len(result.failed)
    click.echo(f"{ok}/{len(result.results)} patches ok in {result.wall_time:.1f} s -> {out}")
    for point in result.failed:
        click.echo(f"failed {point.name}: {point.error}")
    if not no_plot and len(loaded.patchset.labels) == 2 and ok >= 3:
        for path in plot_exclusion(result.results, loaded.patchset.labels, out.with_suffix("")):
            click.echo(f"wrote {path}")
    if result.failed:
        ctx.exit(1)


commands = [patchset, scan_patchset]
