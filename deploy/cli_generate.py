"""``opendata-stats generate``: write a synthetic GamGam skim to analyse."""

from __future__ import annotations

from pathlib import Path

import click
import uproot

from deploy.cli_options import config_option, settings_from_flags
from processors.datasets import PERIODS
from processors.generate import DEFAULT_SIGNAL_MASS, generate_dataset

_POSITIVE = click.FloatRange(min=0.0, min_open=True)
_CODECS = {
    "lz4": uproot.LZ4(1),
    "zstd": uproot.ZSTD(1),
    "zlib": uproot.ZLIB(1),
    "lzma": uproot.LZMA(1),
    "none": None,
}
_OUT = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.option("--out", "out_dir", required=True, type=_OUT, help="Directory to write.")
@config_option
@click.option("--lumi", "lumi_fb", type=_POSITIVE,
              help="Luminosity in fb^-1, e.g. 140 for full Run 2 [config: dataset.lumi_fb].")
@click.option("--scale", type=_POSITIVE, help="Fraction of its events to write [config: dataset.scale].")
@click.option("--events", type=click.IntRange(min=1), help="Write this many continuum events instead (tests).")
@click.option("--seed", type=click.IntRange(min=0),
              help="Random seed [config: dataset.seed; null: the generator's default].")
@click.option("--signal-mass", default=DEFAULT_SIGNAL_MASS, show_default=True, help="Higgs boson mass in GeV.")
@click.option(
    "--signal-strength", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
    help="Signal yield over the SM one.",
)
@click.option("--background-only", is_flag=True, help="Write no signal.")
@click.option("--periods", help=f"Comma-separated periods to write (default all 16: {PERIODS[0].name}, ...).")
@click.option(
    "--compression", type=click.Choice(list(_CODECS)), default="lz4", show_default=True,
    help="Basket compression (level 1).",
)
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes writing files in parallel, without Dask (default: one per core).")
@click.option("--mc", is_flag=True,
              help="Also write the simulated samples (ggH, VBF H->yy at 125 GeV, yy continuum) with their weights.")
@click.option("--mc-events", type=click.IntRange(min=1),
              help="Events to generate per simulated sample, before the skim (default: each sample's own).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a bar of the events generated on stderr.")
@click.pass_context
def generate(
    ctx: click.Context,
    out_dir: Path,
    config_path: Path | None,
    lumi_fb: float | None,
    scale: float | None,
    events: int | None,
    seed: int | None,
    signal_mass: float,
    signal_strength: float,
    background_only: bool,
    periods: str | None,
    compression: str,
    workers: int | None,
    mc: bool,
    mc_events: int | None,
    progress: bool,
) -> None:
    """Generate ATLAS-like GamGam files (continuum + H->yy), metadata.json and truth.json into OUT (and with --mc
    the simulated samples beside them)."""
    settings = settings_from_flags(ctx, {"lumi_fb": "dataset.lumi_fb", "scale": "dataset.scale",
                                         "seed": "dataset.seed"}).settings.dataset
    seeded = {"seed": settings.seed} if settings.seed is not None else {}
    dataset = generate_dataset(
        out_dir,
        lumi_fb=settings.lumi_fb,
        scale=settings.scale,
        **seeded,
        signal_mass=signal_mass,
        signal_strength=signal_strength,
        background_only=background_only,
        events=events,
        periods=[name.strip() for name in periods.split(",") if name.strip()] if periods is not None else None,
        compression=_CODECS[compression],
        workers=workers,
        mc=mc,
        mc_events=mc_events,
        progress=progress,
    )
    truth = dataset.truth
    click.echo(
        f"wrote {len(dataset.files)} files, {dataset.events_written:,} events ({truth['lumi_fb']:.3g} fb^-1) "
        f"to {out_dir} in {truth['generation_seconds']:.1f} s ({truth['events_per_second']:,.0f} events/s)"
    )
    if background_only:
        click.echo("signal: none (background only)")
    else:
        click.echo(
            f"signal: m = {truth['signal_mass']} GeV, resolution {truth['signal_resolution']:.2f} GeV, "
            f"{truth['signal_events_injected']} injected, {truth['selected_signal_events']} selected "
            f"(expected {truth['expected_selected_signal']:.1f})"
        )
    click.echo(
        f"continuum selected in {truth['mass_window'][0]:g}-{truth['mass_window'][1]:g} GeV: "
        f"{truth['selected_background_events']} (expected {truth['background_expected_in_window']:.1f})"
    )
    for name, sample in truth.get("simulation", {}).get("samples", {}).items():
        click.echo(
            f"simulated {name} ({sample['dataset_number']}): {sample['events_written']:,} events, "
            f"{sample['selected_yield']:.4g} +- {sample['selected_yield_error']:.2g} selected at "
            f"{truth['lumi_fb']:.3g} fb^-1 (expected {sample['expected_yield']:.4g})"
        )
    click.echo(f"metadata: {dataset.metadata_path}")
