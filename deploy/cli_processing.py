"""``opendata-stats process``: run the diphoton processor over a dataset on Dask."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from deploy.clusters import dask_client
from deploy.config import load_config, selection_cuts
from processors.datasets import resolve_files
from processors.engine import DEFAULT_CHUNKSIZE, ProcessingResult, process_files
from processors.histograms import save_outputs
from processors.processor import DiphotonProcessor
from processors.schema import TREE_NAME

#: The 2015-16 luminosity of the release, used when no truth.json tells otherwise.
NOMINAL_LUMI_FB = 36.1
CHECKPOINT_SUBDIR = "checkpoint"


def _lumi_of_inputs(metadata: str | None, paths: tuple[str, ...]) -> float:
    """Luminosity of the inputs: the generator's truth.json beside them, else the release's."""
    candidates = [Path(metadata).parent] if metadata else [Path(p).parent for p in paths if "://" not in p][:1]
    for directory in candidates:
        truth = directory / "truth.json"
        if truth.is_file():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return float(json.loads(truth.read_text())["lumi_fb"])
    return NOMINAL_LUMI_FB


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None, config: Any = None) -> Iterator[Any]:
    if workers == 0 and scheduler is None:
        yield None
        return
    with dask_client(config, workers=workers, scheduler=scheduler) as client:
        yield client


def _report(result: ProcessingResult, out: Path) -> None:
    click.echo(
        f"processed {result.events_processed:,} of {result.events_in_files:,} events "
        f"({result.chunks} chunks in {result.tasks} tasks, {result.resumed_chunks} from checkpoint) in {result.wall_time:.1f} s; "
        f"{int(result.histograms['mass'].sum()):,} selected; wrote {out}",
        err=True,
    )
    if result.failed_chunks:
        kinds: dict[str, int] = {}
        for failure in result.failed_chunks:
            kinds[failure.kind] = kinds.get(failure.kind, 0) + 1
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        click.echo(
            f"error: {len(result.failed_chunks)} chunk(s) failed ({counts}); partial results saved, "
            f"see failed_chunks in {out / 'summary.json'}; rerun with --resume to process only those",
            err=True,
        )
        for failure in result.failed_chunks[:5]:
            stop = "end" if failure.entry_stop is None else failure.entry_stop
            click.echo(f"  {failure.file} [{failure.entry_start}, {stop}): {failure.error}", err=True)


@click.command("process")
@click.argument("paths", nargs=-1)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Project config (YAML): cluster, processing, selection and histogram sections; flags override.")
@click.option("--release", help="atlasopenmagic release, resolved online (e.g. 2025e-13tev-beta).")
@click.option("--metadata", type=click.Path(dir_okay=False), help="atlasopenmagic metadata JSON, for offline use.")
@click.option("--skim", default="GamGam", show_default=True)
@click.option("--protocol", type=click.Choice(["root", "https", "eos"]), help="URL kind [default: root].")
@click.option("--workers", type=click.IntRange(min=0), help="Local Dask workers (default: one per core; 0: no Dask).")
@click.option("--scheduler", help="Address of an existing Dask scheduler.")
@click.option("--chunksize", type=click.IntRange(min=1), help=f"Entries per chunk [default: {DEFAULT_CHUNKSIZE}].")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of each file to process, from its start; the luminosity is scaled to match.")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of transient errors [default: 3].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds for each remote read [default: 60].")
@click.option("--bins", type=click.IntRange(min=1), help="m_yy bins [default: 60 in 100-160 GeV].")
@click.option("--lumi", type=click.FloatRange(min=0, min_open=True),
              help="Luminosity of all input files in fb^-1 (default: truth.json beside the inputs, else 36.1).")
@click.option("--resume", is_flag=True, help="Reuse finished chunks from OUT/checkpoint.")
@click.option("--skip-bad-files", is_flag=True, help="List unreadable files as failed instead of stopping.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.pass_context
def process(
    ctx: click.Context, paths: tuple[str, ...], config_path: str | None, release: str | None, metadata: str | None, skim: str,
    protocol: str | None, workers: int | None, scheduler: str | None, chunksize: int | None, fraction: float,
    retries: int | None, timeout: float | None, bins: int | None, lumi: float | None, resume: bool, skip_bad_files: bool,
    progress: bool, out: str,
) -> None:
    """Select diphoton events and histogram m_yy; writes OUT/histograms.json and OUT/summary.json.

    Inputs are PATHS, a --metadata file, or a --release. Exits 1 if chunks failed (partial results
    are saved), 2 on bad input.
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    settings = load_config(config_path)
    options = settings.processing
    files = resolve_files(release=release, metadata=metadata, skim=skim, protocol=protocol or options.protocol,
                          paths=paths or None)
    out_dir = Path(out)
    histogram = settings.histogram
    processor = DiphotonProcessor(cuts=selection_cuts(settings), bins=bins or histogram.bins,
                                  mass_range=(histogram.low, histogram.high))
    with _client(workers, scheduler, settings.cluster) as client:
        result = process_files(
            files, processor=processor, client=client, tree=TREE_NAME, chunksize=chunksize or options.chunksize,
            task_entries=options.task_entries, fraction=fraction, retries=options.retries if retries is None else retries,
            timeout=timeout or options.timeout, checkpoint_dir=out_dir / CHECKPOINT_SUBDIR, resume=resume,
            progress=progress, strict=not skip_bad_files,
        )
    total_lumi = lumi if lumi is not None else _lumi_of_inputs(metadata, paths)
    save_outputs(out_dir, result, lumi_fb=total_lumi * fraction)
    _report(result, out_dir)
    if result.failed_chunks:
        ctx.exit(1)


commands = [process]
