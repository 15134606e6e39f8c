"""``opendata-stats process``: run the diphoton processor over a dataset on Dask.

A run never destroys an earlier good one: outputs are written atomically, only when the run has ended, and a
partial result never replaces a complete one (:func:`processors.histograms.save_outputs`); checkpoints are
never deleted (:class:`processors.checkpoint.DirectoryCheckpointer`). Ctrl-C or SIGTERM end the run with the earlier
outputs as they were and this run's finished chunks checkpointed.
"""

from __future__ import annotations

import contextlib
import signal
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from deploy.clusters import dask_client
from deploy.config import load_config, selection_cuts
from deploy.simulation import SIMULATION_SUBDIR, process_samples, samples_to_process
from processors import chunks as chunking
from processors.datasets import NOMINAL_LUMI_FB, luminosity, resolve_files
from processors.engine import DEFAULT_CHUNKSIZE, ProcessingResult, process_files
from processors.errors import CertificateError
from processors.histograms import OutputPaths, save_outputs
from processors.processor import DiphotonProcessor
from processors.schema import TREE_NAME

CHECKPOINT_SUBDIR = "checkpoint"
#: Exit statuses of a run ended by Ctrl-C and by SIGTERM (128 + the signal, as shells report them).
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
#: Where ``opendata-stats serve`` (deploy.xrootd.XRootDServer) keeps the self-signed certificate it prints.
SERVE_CERTIFICATES = "opendata-xrootd-*/cert.pem"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, like Ctrl-C, so that it ends as cleanly (clusters closed)."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (in the main thread; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def served_certificate(url: str, *, timeout: float = 5.0) -> Path | None:
    """The certificate file of a running ``opendata-stats serve`` that the https server of ``url`` presents.

    The server's certificate is fetched (unverified) and compared with those ``serve`` keeps in the temporary
    directory; None if none matches or the server cannot be reached.
    """
    parsed = urllib.parse.urlsplit(url.removeprefix("simplecache::"))
    if parsed.scheme != "https" or parsed.hostname is None:
        return None
    try:
        presented = ssl.PEM_cert_to_DER_cert(
            ssl.get_server_certificate((parsed.hostname, parsed.port or 443), timeout=timeout))
    except (OSError, ValueError):
        return None
    for candidate in sorted(Path(tempfile.gettempdir()).glob(SERVE_CERTIFICATES)):
        with contextlib.suppress(OSError, ValueError):
            if ssl.PEM_cert_to_DER_cert(candidate.read_text()) == presented:
                return candidate
    return None


def _certificate_advice(error: CertificateError) -> str:
    found = served_certificate(error.url)
    if found is None:
        return str(error)
    return f"{error} (`opendata-stats serve` printed it: export SSL_CERT_FILE={found})"


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None, config: Any = None) -> Iterator[Any]:
    if workers == 0 and scheduler is None:
        yield None
        return
    with dask_client(config, workers=workers, scheduler=scheduler) as client:
        yield client


def _advice(kinds: set[str]) -> str:
    if chunking.CERTIFICATE in kinds:
        return "set SSL_CERT_FILE to the servers' certificate and rerun"
    if kinds <= set(chunking.PERMANENT):
        return "a rerun cannot mend them: replace or drop those files"
    return "rerun with --resume to process only those"


def _selected(result: ProcessingResult) -> str:
    """What a run selected: data events, or each simulated sample's weighted yield."""
    simulated = result.histograms.get("mc_mass")
    if simulated is None:
        return f"{int(result.histograms['mass'].sum()):,} selected"
    yields = simulated[:, "nominal", :].project("dataset")
    named = zip(yields.axes[0], yields.values())
    return "selected yields " + ", ".join(f"{name} {value:,.1f}" for name, value in named)


def _report(result: ProcessingResult, out: Path, paths: OutputPaths) -> None:
    click.echo(
        f"processed {result.events_processed:,} of {result.events_in_files:,} events "
        f"({result.chunks} chunks in {result.tasks} tasks, {result.resumed_chunks} from checkpoint) in {result.wall_time:.1f} s; "
        f"{_selected(result)}; wrote {paths.histograms}, {paths.summary}",
        err=True,
    )
    other = result.other_checkpoints
    if other.count:
        click.echo(
            f"note: kept {other.count} checkpoint(s) in {out / CHECKPOINT_SUBDIR} of other inputs or settings, "
            f"not used ({'; '.join(other.reasons[:3])}); delete them to reclaim the space",
            err=True,
        )
    if result.failed_chunks:
        kinds: dict[str, int] = {}
        for failure in result.failed_chunks:
            kinds[failure.kind] = kinds.get(failure.kind, 0) + 1
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        kept = f"; the complete result in {paths.kept} is kept" if paths.kept is not None else ""
        click.echo(
            f"error: {len(result.failed_chunks)} chunk(s) failed ({counts}); partial results saved in "
            f"{paths.summary}{kept}, see its failed_chunks; {_advice(set(kinds))}",
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
@click.option("--skim", default="GamGam", show_default=True, help="atlasopenmagic skim of the release or metadata.")
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
              help="Luminosity of all input files in fb^-1 (default: the truth.json beside the input files, local or "
                   f"on their server, or beside --metadata; else the release's periods, else {NOMINAL_LUMI_FB}).")
@click.option("--resume", is_flag=True,
              help="Reuse the chunks in OUT/checkpoint computed from the same files (path, size, ROOT UUID), settings "
                   "and version; others are processed again, their checkpoints kept.")
@click.option("--skip-bad-files", is_flag=True, help="List unreadable files as failed instead of stopping.")
@click.option("--mc/--no-mc", "mc", default=None,
              help="Also process the simulated samples (ggH, VBF H->yy, yy continuum) the metadata or release lists, "
                   "weighted to the data's luminosity, into OUT/simulation [config: processing.simulation; auto: "
                   "where listed].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar of the chunks.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.pass_context
def process(
    ctx: click.Context, paths: tuple[str, ...], config_path: str | None, release: str | None, metadata: str | None, skim: str,
    protocol: str | None, workers: int | None, scheduler: str | None, chunksize: int | None, fraction: float,
    retries: int | None, timeout: float | None, bins: int | None, lumi: float | None, resume: bool, skip_bad_files: bool,
    mc: bool | None, progress: bool, out: str,
) -> None:
    """Select diphoton events and histogram m_yy; writes OUT/histograms.json and OUT/summary.json.

    Inputs are PATHS, a --metadata file, or a --release. With --mc (by default where the metadata or release
    lists them) the simulated samples go to OUT/simulation, each normalised to the data's whole luminosity. Exits
    1 if chunks failed (partial results are saved, but never over a complete earlier result: then to
    OUT/*.partial.json), 2 on bad input, 130 / 143 on Ctrl-C / SIGTERM (earlier outputs unchanged; --resume
    continues).
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    settings = load_config(config_path)
    options = settings.processing
    files = resolve_files(release=release, metadata=metadata, skim=skim, protocol=protocol or options.protocol,
                          paths=paths or None)
    out_dir = Path(out)
    histogram = settings.histogram
    processor_options = {"cuts": selection_cuts(settings), "bins": bins or histogram.bins,
                         "mass_range": (histogram.low, histogram.high)}
    processor = DiphotonProcessor(**processor_options)
    read_timeout = timeout or options.timeout
    found: list[tuple[float, str]] = []

    def data_luminosity() -> tuple[float, str]:
        """The data's whole luminosity and where it came from, read once and only after the data were read (a
        source that fails, e.g. an untrusted certificate, fails in the engine at once, without retried reads)."""
        if not found:
            found.append((lumi, "--lumi") if lumi is not None
                         else luminosity(files, metadata=metadata, timeout=min(read_timeout, 10.0)))
        return found[0]

    samples = samples_to_process(options.simulation if mc is None else mc, release=release, metadata=metadata,
                                 skim=skim, protocol=protocol or options.protocol,
                                 echo=lambda line: click.echo(line, err=True))
    engine = {"tree": TREE_NAME, "chunksize": chunksize or options.chunksize, "task_entries": options.task_entries,
              "fraction": fraction, "retries": options.retries if retries is None else retries,
              "timeout": read_timeout, "resume": resume, "progress": progress, "strict": not skip_bad_files}
    simulated = None
    try:
        with _sigterm_interrupts(), _client(workers, scheduler, settings.cluster) as client:
            result = process_files(files, processor=processor, client=client,
                                   checkpoint_dir=out_dir / CHECKPOINT_SUBDIR, **engine)
            if samples:
                # Normalised to the data's whole luminosity: a fraction of a sample gives that fraction of its yield.
                simulated = process_samples(
                    samples, lumi_fb=data_luminosity()[0], processor_options=processor_options, client=client,
                    checkpoint_dir=out_dir / SIMULATION_SUBDIR / CHECKPOINT_SUBDIR, **engine)
    except CertificateError as err:
        raise CertificateError(_certificate_advice(err), err.url) from None
    except KeyboardInterrupt as err:
        cause = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
        click.echo(
            f"error: interrupted by {cause}; the outputs in {out_dir} are as they were; the chunks finished are "
            f"checkpointed in {out_dir / CHECKPOINT_SUBDIR}: rerun with --resume to continue",
            err=True,
        )
        ctx.exit(EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED)
    total = data_luminosity()
    written = save_outputs(out_dir, result, lumi_fb=total[0] * fraction, lumi_source=total[1], keep_complete=True)
    _report(result, out_dir, written)
    if simulated is not None:
        # The samples' yields are at the data's whole luminosity, whatever the fraction processed.
        simulation_dir = out_dir / SIMULATION_SUBDIR
        _report(simulated, simulation_dir, save_outputs(simulation_dir, simulated, lumi_fb=total[0],
                                                        lumi_source=total[1], keep_complete=True))
    if result.failed_chunks or (simulated is not None and simulated.failed_chunks):
        ctx.exit(1)
