"""``opendata-stats fit`` and ``opendata-stats scan-mass``: background fit, workspace, significance, mass scan."""

from __future__ import annotations

import pathlib

import click

from deploy.analysis import fit_spectrum, look_elsewhere, scan_spectrum
from deploy.cli_options import DEGREE, config_option, dask_or_local, scheduler_option, settings_from_flags, workers_option
from stats.mass_scan import mass_grid
from stats.spectrum import load_spectrum
from stats.workspace import format_model_info

_DIR = click.Path(exists=True, file_okay=False, path_type=pathlib.Path)
_OUT = click.Path(file_okay=False, path_type=pathlib.Path)
_METHOD = click.Choice(["robust", "tutorial"])

#: The ``fit`` section's flags, shared by both commands: parameter name -> config key.
FIT_FLAGS = {"mass": "fit.mass", "degree": "fit.degree", "method": "fit.method", "resolution": "fit.resolution"}


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _fit_options(command):
    for option in reversed([
        click.option("--mass", type=float, help="Fixed Gaussian centre in GeV [config: fit.mass]."),
        click.option("--degree", type=DEGREE,
                     help="Polynomial degree, or 'auto': the F-tests' choice at --mass [config: fit.degree]."),
        click.option("--method", type=_METHOD, help="Background fit method [config: fit.method]."),
        click.option("--resolution", type=float,
                     help="Peak width in GeV, fixed in the robust method [config: fit.resolution]."),
    ]):
        command = option(command)
    return command


@click.command()
@click.argument("directory", type=_DIR)
@config_option
@_fit_options
@click.option("--likelihood", type=click.Choice(["chi2", "poisson"]),
              help="Weighted least squares (lmfit) or binned Poisson likelihood, robust method only "
                   "[config: fit.likelihood].")
@click.option("--out", "out_dir", type=_OUT, help="Output directory (default: DIRECTORY).")
@click.pass_context
def fit(ctx: click.Context, directory: pathlib.Path, out_dir: pathlib.Path | None, **_: object) -> None:
    """Fit DIRECTORY's mass spectrum; write fit.json, workspace.json and plots; print the result.

    Where DIRECTORY holds the simulated samples' output (DIRECTORY/simulation, from `process --mc`), also the H->yy
    model on the simulated templates: mu relative to the Standard Model with the luminosity, photon energy scale
    and resolution and spurious-signal uncertainties (workspace_simulation.json).
    """
    all_settings = settings_from_flags(ctx, {**FIT_FLAGS, "likelihood": "fit.likelihood"}).settings
    settings = all_settings.fit
    record = fit_spectrum(directory, out_dir or directory, settings, all_settings.model)
    fitted, significance, profile_point = record["background_fit"], record["significance"], record["profile_likelihood"]
    chosen = record["degree_choice"]
    how = f" ({chosen['by']})" if chosen["requested"] == "auto" else ""
    click.echo(f"fit at m = {settings.mass:g} GeV, degree {record['degree']}{how}, {settings.method}/"
               f"{settings.likelihood}: chi2/ndf = {fitted['chi2']:.1f}/{fitted['ndf']} = {fitted['chi2_ndf']:.3f}")
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
    simulation = record.get("simulation_model")
    if simulation is not None:
        for line in simulation_lines(simulation):
            click.echo(line)
    click.echo(f"wrote {(out_dir or directory) / 'fit.json'}, workspace.json and plots")
    if "error" in significance or (simulation is not None and "error" in simulation):
        ctx.exit(1)


def simulation_lines(simulation: dict) -> list[str]:
    """The simulation model's result in a few lines (or its error)."""
    if "error" in simulation:
        return [f"simulation model: failed ({simulation['error']})"]
    significance = simulation["significance"]
    spurious = simulation["spurious_signal"][str(simulation["degree"])]
    return [
        f"simulation model ({' + '.join(simulation['signal_samples'])} templates, mu relative to the SM, "
        f"{simulation['expected_signal']:.1f} signal events at mu = 1): mu = {simulation['mu']:.3f} "
        f"+/- {simulation['mu_unc']:.3f}; significance observed {significance['observed']:.2f} sigma, expected "
        f"{significance['expected']:.2f} sigma (Asimov, mu = 1)",
        f"spurious signal of degree {simulation['degree']}: {spurious['value']:.1f} events at {spurious['mass']:g} GeV "
        f"({100 * spurious['relative_to_signal']:.0f} % of the signal, {100 * spurious['relative_to_uncertainty']:.0f} "
        f"% of sigma_bkg; {'passes' if spurious['passes'] else 'fails'} the ATLAS criteria; simulation statistics "
        f"+/- {spurious['mc_unc']:.1f}, zeta {spurious['zeta']:.1f}"
        + ("" if spurious.get("passes_relaxed") is None else
           f", {'passes' if spurious['passes_relaxed'] else 'fails'} the relaxed criteria") + ")",
        *([f"spurious-signal uncertainty: {simulation['spurious_uncertainty']['explanation']}"]
          if "spurious_uncertainty" in simulation else []),
    ]


@click.command("scan-mass")
@click.argument("directory", type=_DIR)
@config_option
@click.option("--masses", help="START:STOP:NUM or M1,M2,... in GeV [config: mass_scan.low, high, points].")
@_fit_options
@click.option("--toys", type=click.IntRange(min=0),
              help="Background-only toys for the global significance (look-elsewhere effect); 0: none "
                   "[config: look_elsewhere.toys].")
@click.option("--seed", type=click.IntRange(min=0), help="Root seed of the toys [config: look_elsewhere.seed].")
@workers_option(in_process=True, default="in this process")
@scheduler_option
@click.option("--out", "out_dir", type=_OUT, help="Output directory (default: DIRECTORY).")
@click.pass_context
def scan_mass(ctx: click.Context, directory: pathlib.Path, masses: str | None, workers: int | None,
              scheduler: str | None, out_dir: pathlib.Path | None, **_: object) -> None:
    """Scan the local discovery significance over mass, and its global significance from toys; write
    mass_scan.json, look_elsewhere.json and plots (exit 1 if a point or a toy batch failed).

    The degree 'auto' is the F-tests' choice at --mass, as `fit` chooses it.
    """
    configuration = settings_from_flags(ctx, {**FIT_FLAGS, "toys": "look_elsewhere.toys",
                                              "seed": "look_elsewhere.seed"})
    settings = configuration.settings
    out_dir = out_dir or directory
    spectrum = load_spectrum(directory)
    grid = mass_grid(masses) if masses else settings.mass_scan.masses()
    with dask_or_local(configuration, workers, scheduler, in_process_by_default=True) as client:
        scan, record = scan_spectrum(spectrum, out_dir, grid, settings.fit, client=client, source=directory)
        lee = look_elsewhere(spectrum, out_dir, scan, record, settings.fit, settings.look_elsewhere, client=client)
    best = scan.best
    chosen = record["degree_choice"]
    how = f" ({chosen['by']} at {settings.fit.mass:g} GeV)" if chosen["requested"] == "auto" else ""
    click.echo(f"{len(scan.points)} masses ({settings.fit.method}, degree {record['degree']}{how}) in "
               f"{scan.wall_time:.2f} s, {len(scan.failed)} failed")
    if best is not None:
        click.echo(f"largest local significance {best['significance']:.2f} sigma at {best['mass']:g} GeV "
                   f"(p0 {best['p0']:.3g})")
    for point in scan.failed:
        click.echo(f"failed at {point['mass']:g} GeV: {point['error']}")
    if lee is not None:
        click.echo(f"global: {lee['toys']['statement']} ({lee['toys']['toys']} toys)")
        for estimate in lee["gross_vitells"]:
            click.echo(f"global (Gross-Vitells, upcrossings of {estimate['level']:g} sigma counted on the "
                       f"{estimate['source']}): p = {_number(estimate['p_value'])}, "
                       f"{_number(estimate['significance'])} sigma")
        for batch in lee["batches"]["failed"]:
            click.echo(f"failed toy batch {batch}")
    click.echo(f"wrote {out_dir / 'mass_scan.json'}" + (", look_elsewhere.json" if lee else "") + " and plots")
    if scan.failed or (lee is not None and not lee["complete"]):
        ctx.exit(1)
