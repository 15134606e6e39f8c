"""``opendata-stats run``: the whole analysis on the embedded default, in one command."""

from __future__ import annotations

import pathlib

import click

from deploy.cli_options import (DEGREE, LikelihoodsType, config_option, dask_or_local, scheduler_option,
                                settings_from_flags, workers_option)

#: ``run``'s flags that set a config key: parameter name -> key.
RUN_FLAGS = {"lumi": "dataset.lumi_fb", "scale": "dataset.scale", "seed": "dataset.seed",
             "chunksize": "processing.chunksize", "degree": "fit.degree"}


@click.command("run")
@config_option
@click.option("--out", default="output", show_default=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Output directory.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Generated dataset directory (default: OUT/data; reused when its parameters match).")
@click.option("--lumi", type=click.FloatRange(min=0, min_open=True),
              help="Luminosity of the generated dataset in fb^-1 [config: dataset.lumi_fb].")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True),
              help="Share of the release's events to generate [config: dataset.scale].")
@click.option("--seed", type=click.IntRange(min=0), help="Generator seed [config: dataset.seed].")
@workers_option(in_process=False)
@scheduler_option
@click.option("--chunksize", type=click.IntRange(min=1), help="Entries per chunk [config: processing.chunksize].")
@click.option("--degree", type=DEGREE, help="Background polynomial degree or 'auto' (F-tests) [config: fit.degree].")
@click.option("--masses", help="Mass grid of the scan and of the analysis's own patchset: START:STOP:NUM or M1,M2,... "
                                "[config: mass_scan, mass_patchset].")
@click.option("--likelihoods", type=LikelihoodsType(exists=True),
              help="Published likelihoods for the PatchSet scan: tarball, directory or HEPData source as "
                   "fetch-likelihoods takes it; default: the analysis's own.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars, and count the seconds of each long step, on stderr.")
@click.pass_context
def run(ctx: click.Context, out: pathlib.Path, data_dir: pathlib.Path | None, workers: int | None,
        scheduler: str | None, masses: str | None, likelihoods: pathlib.Path | None, progress: bool,
        **_: object) -> None:
    """Generate (cached), process on Dask, fit, scan the mass and a PatchSet; write plots, results.json, report.md.

    The report lists every setting with where it came from (default, config file or flag). Exits 1 if any chunk or
    scan point failed (everything else is still written).
    """
    from deploy.progress import live_step

    configuration = settings_from_flags(ctx, RUN_FLAGS)
    # The analysis imports coffea, Dask, pyhf and matplotlib: seconds before the first step, counted on stderr.
    with live_step("loading the analysis libraries", enabled=progress):
        from deploy.pipeline import run_pipeline
        from stats.mass_scan import mass_grid
    grid = mass_grid(masses) if masses else None
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    with dask_or_local(configuration, workers, scheduler) as client:
        result = run_pipeline(out, client=client, configuration=configuration, data_dir=data_dir, masses=grid,
                              likelihoods=likelihoods, echo=echo, progress=progress)
    click.echo(f"results: {result.results_path}")
    click.echo(f"report:  {result.report_path}")
    click.echo(f"plots:   {result.out_dir}/{{fit,mass_scan,patchset}}/*.png")
    if result.failures:
        echo(f"{len(result.failures)} failure(s), listed in {result.results_path} and the report")
        ctx.exit(1)
