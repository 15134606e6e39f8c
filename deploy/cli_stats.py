"""``opendata-stats fit`` and ``opendata-stats scan-mass``: background fit, workspace, significance, mass scan."""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any

import click
import numpy as np

from stats.background import DEFAULT_RESOLUTION_GEV, fit_background, scan_degrees
from stats.errors import FitError
from stats.inference import discovery_significance, fit_signal_strength
from stats.mass_scan import mass_grid, scan_masses
from stats.spectrum import load_spectrum
from stats.workspace import build_workspace, format_model_info, model_info, save_workspace

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
    from stats.plotting import plot_data_mc, plot_degree_scan, plot_fit

    chosen = _degree(degree)
    out_dir = out_dir or directory
    out_dir.mkdir(parents=True, exist_ok=True)
    spectrum = load_spectrum(directory)
    options = {"mass": mass, "method": method, "likelihood": likelihood, "resolution": resolution}
    record: dict[str, Any] = {"input": str(directory), **options}
    if chosen == "auto":
        degrees = scan_degrees(spectrum.counts, spectrum.edges, **options)
        chosen = degrees.best_degree
        record["degree_scan"] = [row._asdict() for row in degrees.rows]
        plot_degree_scan(degrees, out_dir / "degree_scan")
    background = fit_background(spectrum.counts, spectrum.edges, degree=chosen, **options)
    spec = build_workspace(spectrum.counts, background)
    save_workspace(spec, out_dir / "workspace.json")
    info = model_info(spec)
    strength = fit_signal_strength(spec)
    record.update(
        degree=chosen, lumi_fb=spectrum.lumi_fb,
        background_fit={"parameters": background.parameters, "chi2": background.chi2, "ndf": background.ndf,
                        "chi2_ndf": background.chi2_ndf, "signal_yield": background.signal_yield,
                        "signal_yield_unc": background.signal_yield_unc, "sigma": background.sigma,
                        "covariance_ok": background.covariance_ok},
        mu=strength.mu, mu_unc=strength.mu_unc, model=info,
    )
    try:
        significance = discovery_significance(spec)
        record["significance"] = significance._asdict()
    except FitError as err:
        record["significance"] = {"error": str(err)}
    profile_point = scan_masses(spectrum.counts, spectrum.edges, [mass], degree=chosen, resolution=resolution).points[0]
    record["profile_likelihood"] = profile_point
    plot_fit(spectrum.counts, spectrum.edges, background, out_dir / "fit")
    plot_data_mc(spec, out_dir / "data_mc_prefit")
    plot_data_mc(spec, out_dir / "data_mc_postfit", fit_results=strength.fit_results)
    (out_dir / "fit.json").write_text(json.dumps(_plain(record), indent=2))

    click.echo(f"fit at m = {mass:g} GeV, degree {chosen}, {method}/{likelihood}: chi2/ndf = "
               f"{background.chi2:.1f}/{background.ndf} = {background.chi2_ndf:.3f}")
    click.echo(f"signal yield {background.signal_yield:.1f} +/- {background.signal_yield_unc:.1f}, "
               f"width {background.sigma:.2f} GeV; mu = {strength.mu:.3f} +/- {strength.mu_unc:.3f}")
    if "error" in record["significance"]:
        click.echo(f"workspace significance: failed ({record['significance']['error']})")
    else:
        click.echo(f"workspace significance: observed {significance.observed:.2f} sigma (p0 {significance.observed_p0:.3g}), "
                   f"expected {significance.expected:.2f} sigma")
    if profile_point["status"] == "ok":
        click.echo(f"profile-likelihood significance: {profile_point['significance']:.2f} sigma "
                   f"(p0 {profile_point['p0']:.3g})")
    click.echo(format_model_info(info))
    click.echo(f"wrote {out_dir / 'fit.json'}, {out_dir / 'workspace.json'} and plots")
    if "error" in record["significance"]:
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
    from stats.plotting import plot_mass_scan

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    out_dir = out_dir or directory
    out_dir.mkdir(parents=True, exist_ok=True)
    spectrum = load_spectrum(directory)
    grid = mass_grid(masses)
    distributed = workers is not None or scheduler is not None
    with dask_client(workers=workers, scheduler=scheduler) if distributed else contextlib.nullcontext() as client:
        scan = scan_masses(spectrum.counts, spectrum.edges, grid, client=client, method=method, degree=degree,
                           resolution=resolution)
    record = {"input": str(directory), "method": method, "degree": degree, "points": scan.points,
              "wall_time": scan.wall_time, "failed": len(scan.failed)}
    (out_dir / "mass_scan.json").write_text(json.dumps(_plain(record), indent=2))
    plot_mass_scan(scan, out_dir / "mass_scan")
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


def _plain(value: Any) -> Any:
    # JSON has no numpy types, tuples or non-finite floats.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


commands = [fit, scan_mass]
