"""Faults during processing: a worker killed mid-run, broken files, an interrupted client. No event is lost.

Each run is compared bin for bin with a clean run of the same generated files, and failed entry ranges are
checked exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import uproot
from _photon_files import write_photon_file
from coffea.processor import accumulate

from processors import chunks
from processors.chunks import inspect_file
from processors.engine import process_files
from processors.generate import generate_dataset
from processors.planning import plan_chunks
from processors.processor import DiphotonProcessor

pytestmark = pytest.mark.timeout(120)

PERIODS = ("data15_periodD", "data15_periodE", "data16_periodA")
COLUMNS = tuple(DiphotonProcessor.columns)
OPTIONS = dict(chunksize=1, progress=False)


class SlowDiphotonProcessor(DiphotonProcessor):
    """The diphoton processor, 0.15 s slower per chunk, so a run lasts long enough to be interrupted."""

    def process(self, events):
        time.sleep(0.15)
        return super().process(events)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """About 40k events in three files of 2,500-event clusters: 2 + 7 + 8 chunks at ``chunksize=1``."""
    generated = generate_dataset(tmp_path_factory.mktemp("faults"), events=40_000, periods=PERIODS, basket_entries=2_500, seed=11)
    return [str(path) for path in generated.files]


@pytest.fixture(scope="module")
def clean(dataset):
    result = process_files(dataset, processor=DiphotonProcessor(), **OPTIONS)
    assert result.failed_chunks == [] and result.chunks == 17
    return result


def plan(path):
    info = inspect_file(path, tree="analysis", columns=COLUMNS, timeout=5, max_retries=0)
    return plan_chunks(info, tree="analysis", chunksize=1, fraction=1.0)


def equal(histograms, reference):
    return all((histograms[name].values() == reference[name].values()).all() for name in ("mass", "cutflow"))


def checkpoints(directory: Path) -> int:
    return len(list(directory.glob("chunk-*.pkl")))


def run_chunks(chunk_list):
    """The processor's outputs of ``chunk_list`` read directly, merged."""
    options = dict(processor_type=DiphotonProcessor, processor_config={}, dataset="data", timeout=5, max_retries=0)
    return accumulate([chunks.run_chunk(chunk, **options).output for chunk in chunk_list], DiphotonProcessor().empty_output())


@pytest.mark.slow
def test_sigkilled_dask_worker_loses_no_chunk(dataset, clean, dask_scheduler_address, tmp_path):
    """One of the two real ``dask worker`` processes is SIGKILLed mid-run; its nanny starts a new one."""
    from distributed import Client

    checkpoint, seen, finished = tmp_path / "checkpoint", {}, threading.Event()
    with Client(dask_scheduler_address) as client:
        victim = sorted(client.run(os.getpid).values())[0]

        def kill_a_worker():
            while checkpoints(checkpoint) < 3 and not finished.is_set():
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)
            seen["done_at_kill"] = checkpoints(checkpoint)

        killer = threading.Thread(target=kill_a_worker)
        killer.start()
        try:
            result = process_files(dataset, processor=SlowDiphotonProcessor(), client=client, checkpoint_dir=checkpoint, **OPTIONS)
        finally:
            finished.set()
            killer.join()
        client.wait_for_workers(2, timeout=60)  # leave the shared cluster as found
        assert victim not in client.run(os.getpid).values()
    assert 3 <= seen["done_at_kill"] < result.chunks  # killed while chunks were left
    assert result.failed_chunks == []
    assert result.events_processed == result.events_in_files == clean.events_processed
    assert equal(result.histograms, clean.histograms)


def basket_ends(path, chunk):
    """The largest end byte of the baskets ``chunk`` needs."""
    tree = uproot.open(path)["analysis"]
    ends = []
    for name in COLUMNS:
        branch = tree[name]
        seeks, sizes = branch.member("fBasketSeek"), branch.member("fBasketBytes")
        for index in range(branch.num_baskets):
            start, stop = branch.basket_entry_start_stop(index)
            if start < chunk.entry_stop and stop > chunk.entry_start:
                ends.append(int(seeks[index]) + int(sizes[index]))
    return max(ends)


def test_truncated_and_schema_broken_files_are_reported_and_the_rest_is_counted(dataset, tmp_path):
    good = [dataset[0], dataset[2]]
    truncated, header_only, no_branch = tmp_path / "truncated.root", tmp_path / "header_only.root", tmp_path / "no_branch.root"
    original = Path(dataset[1]).read_bytes()
    cut = int(len(original) * 0.6)
    truncated.write_bytes(original[:cut])
    header_only.write_bytes(original[:2000])
    write_photon_file(no_branch, 5_000, seed=3, drop=("photon_isTightID",))
    files = [good[0], str(truncated), str(header_only), str(no_branch), good[1]]

    result = process_files(files, processor=DiphotonProcessor(), strict=False, **OPTIONS)

    # The truncated file: exactly the chunks whose baskets lie past the cut fail; the others are processed.
    middle = plan(dataset[1])
    lost = [c for c in middle if basket_ends(dataset[1], c) > cut]
    kept = [c for c in middle if c not in lost]
    assert 0 < len(lost) < len(middle)
    failed = [(f.file, f.entry_start, f.entry_stop, f.kind) for f in result.failed_chunks]
    assert failed == [
        *[(str(truncated), c.entry_start, c.entry_stop, "corrupt") for c in lost],
        (str(header_only), 0, None, "corrupt"),
        (str(no_branch), 0, None, "schema"),
    ]
    reasons = {f.file: f.error for f in result.failed_chunks}
    assert "not a readable ROOT file" in reasons[str(truncated)] and "received" in reasons[str(truncated)]
    assert "not a readable ROOT file" in reasons[str(header_only)]
    assert "photon_isTightID" in reasons[str(no_branch)]
    # Every other event is processed and counted.
    good_chunks = plan(good[0]) + kept + plan(good[1])
    assert result.events_processed == sum(c.entry_stop - c.entry_start for c in good_chunks)
    assert result.events_in_files == sum(uproot.open(f)["analysis"].num_entries for f in (*good, truncated))
    assert equal(result.histograms, run_chunks(good_chunks))


def test_interrupted_run_resumes_with_only_the_missing_chunks(dataset, clean, tmp_path, monkeypatch):
    """KeyboardInterrupt after 5 chunks; the resumed run processes the other 12 and equals a clean run."""
    original, calls = chunks.run_chunk, []

    def interrupt_at_sixth(chunk, **options):
        calls.append(chunk)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return original(chunk, **options)

    monkeypatch.setattr(chunks, "run_chunk", interrupt_at_sixth)
    with pytest.raises(KeyboardInterrupt):
        process_files(dataset, processor=DiphotonProcessor(), checkpoint_dir=tmp_path, **OPTIONS)
    assert checkpoints(tmp_path) == 5

    calls.clear()
    monkeypatch.setattr(chunks, "run_chunk", lambda chunk, **options: calls.append(chunk) or original(chunk, **options))
    resumed = process_files(dataset, processor=DiphotonProcessor(), checkpoint_dir=tmp_path, resume=True, **OPTIONS)
    assert len(calls) == 12 and len(set(calls)) == 12
    assert resumed.resumed_chunks == 5 and resumed.chunks == 17 and resumed.failed_chunks == []
    assert resumed.events_processed == resumed.events_in_files == clean.events_processed
    assert equal(resumed.histograms, clean.histograms)


KILLED_CLIENT = """
import sys
from test_faults import SlowDiphotonProcessor
from processors.engine import process_files
process_files(sys.argv[2:], processor=SlowDiphotonProcessor(), chunksize=1, checkpoint_dir=sys.argv[1], progress=False)
print("finished")
"""


@pytest.mark.slow
def test_sigkilled_client_resumes_from_its_checkpoints(dataset, clean, tmp_path, monkeypatch):
    """The process running the engine is SIGKILLed; a new one reprocesses only the chunks it had not saved."""
    script, checkpoint = tmp_path / "client.py", tmp_path / "checkpoint"
    script.write_text(textwrap.dedent(KILLED_CLIENT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *filter(None, sys.path)]))
    client = subprocess.Popen([sys.executable, str(script), str(checkpoint), *dataset], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while checkpoints(checkpoint) < 4 and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        client.send_signal(signal.SIGKILL)
    finally:
        client.kill()
        stdout, _ = client.communicate(timeout=30)
    assert client.returncode == -signal.SIGKILL and b"finished" not in stdout
    saved = checkpoints(checkpoint)
    assert 4 <= saved < 17

    original, calls = chunks.run_chunk, []
    monkeypatch.setattr(chunks, "run_chunk", lambda chunk, **options: calls.append(chunk) or original(chunk, **options))
    resumed = process_files(dataset, processor=SlowDiphotonProcessor(), checkpoint_dir=checkpoint, resume=True, **OPTIONS)
    assert resumed.resumed_chunks == saved and len(calls) == 17 - saved
    assert resumed.failed_chunks == [] and resumed.events_processed == clean.events_processed
    assert equal(resumed.histograms, clean.histograms)
