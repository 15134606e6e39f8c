"""``opendata-stats fit`` and ``opendata-stats scan-mass``: background fit, workspace, significance, mass scan."""

from __future__ import annotations

import contextlib
import pathlib

import click

from deploy.analysis import fit_spectrum, scan_spectrum
from stats.background import DEFAULT_RESOLUTION_GEV
from stats.mass_scan import mass_grid
from stats.spectrum import load_spectrum
from stats.workspace import format_model_info

_DIR = click.Path(exists=True, file_okay=False, path_type=pathlib.Path)
_OUT = click.Path(file_okay=False, path_type=pathlib.Path)
_METHOD = click.Choice(["robust", "tutorial"])


def _degree(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an integer nor 'auto'") from None


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@click.command()
@click.argument("directory", type=_DIR)
@click.option("--mass", default=125.0, show_default=True, type=float, help="Fixed Gaussian centre in GeV.")
@click.option("--degree", default="4", show_default=True, help="Polynomial degree, or 'auto' (F-tests over 2-6).")
@click.option("--method", default="robust", show_default=True, type=_METHOD, help="Background fit method.")
@click.option("--likelihood", default="chi2", show_default=True, type=click.Choice(["chi2", "poisson"]),
              help="Weighted least squares (lmfit) or binned Poisson likelihood (robust method only).")
@click.option("--resolution", default=DEFAULT_RESOLUTION_GEV, show_default=True, type=float,
              help="Peak width in GeV (fixed in the robust method).")
@click.option("--out", "out_dir", type=_OUT, help="Output directory (default: DIRECTORY).")
@click.pass_context
def fit(ctx: click.Context, directory: pathlib.Path, mass: float, degree: str, method: str, likelihood: str,
        resolution: float, out_dir: pathlib.Path | None) -> None:
    """Fit DIRECTORY's mass spectrum; write fit.json, workspace.json and plots; print the result."""
    record = fit_spectrum(directory, out_dir or directory, mass=mass, degree=_degree(degree), method=method,
                          likelihood=likelihood, resolution=resolution)
    fitted, significance, profile_point = record["background_fit"], record["significance"], record["profile_likelihood"]
    click.echo(f"fit at m = {mass:g} GeV, degree {record['degree']}, {method}/{likelihood}: chi2/ndf = "
               f"{fitted['chi2']:.1f}/{fitted['ndf']} = {fitted['chi2_ndf']:.3f}")
    click.echo(f"signal yield {fitted['signal_yield']:.1f} +/- {_number(fitted['signal_yield_unc'])}, "
               f"width {fitted['sigma']:.2f} GeV; mu = {record['mu']:.3f} +/- {_number(record['mu_unc'])}")
    if "error" in significance:
        click.echo(f"workspace significance: failed ({significance['error']})")
    else:
        click.echo(f"workspace significance: observed {significance['observed']:.2f} sigma "
                   f"(p0 {significance['observed_p0']:.3g}), expected {significance['expected']:.2f} sigma")
    if profile_point["status"] == "ok":
        click.echo(f"profile-likelihood significance: {profile_point['significance']:.2f} sigma "
                   f"(p0 {profile_point['p0']:.3g})")
    click.echo(format_model_info(record["model"]))
    click.echo(f"wrote {(out_dir or directory) / 'fit.json'}, workspace.json and plots")
    if "error" in significance:
        ctx.exit(1)


@click.command("scan-mass")
@click.argument("directory", type=_DIR)
@click.option("--masses", default="110:140:25", show_default=True, help="START:STOP:NUM or M1,M2,... in GeV.")
@click.option("--method", default="robust", show_default=True, type=_METHOD, help="Significance method.")
@click.option("--degree", default=4, show_default=True, type=click.IntRange(0, 10), help="Polynomial degree.")
@click.option("--resolution", default=DEFAULT_RESOLUTION_GEV, show_default=True, type=float,
              help="Peak width in GeV (robust method).")
@click.option("--workers", type=click.IntRange(min=1), help="Run on a local Dask cluster of this many workers.")
@click.option("--scheduler", help="Run on the Dask scheduler at this address.")
@click.option("--out", "out_dir", type=_OUT, help="Output directory (default: DIRECTORY).")
@click.pass_context
def scan_mass(ctx: click.Context, directory: pathlib.Path, masses: str, method: str, degree: int, resolution: float,
              workers: int | None, scheduler: str | None, out_dir: pathlib.Path | None) -> None:
    """Scan the local discovery significance over mass; write mass_scan.json and plots (exit 1 if a point failed)."""
    from deploy.clusters import dask_client

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    out_dir = out_dir or directory
    spectrum = load_spectrum(directory)
    grid = mass_grid(masses)
    distributed = workers is not None or scheduler is not None
    with dask_client(workers=workers, scheduler=scheduler) if distributed else contextlib.nullcontext() as client:
        scan, _ = scan_spectrum(spectrum, out_dir, grid, client=client, method=method, degree=degree,
                                resolution=resolution, source=str(directory))
    best = scan.best
    click.echo(f"{len(scan.points)} masses ({method}) in {scan.wall_time:.2f} s, {len(scan.failed)} failed")
    if best is not None:
        click.echo(f"largest local significance {best['significance']:.2f} sigma at {best['mass']:g} GeV "
                   f"(p0 {best['p0']:.3g})")
    for point in scan.failed:
        click.echo(f"failed at {point['mass']:g} GeV: {point['error']}")
    click.echo(f"wrote {out_dir / 'mass_scan.json'} and plots")
    if scan.failed:
        ctx.exit(1)


commands = [fit, scan_mass]
