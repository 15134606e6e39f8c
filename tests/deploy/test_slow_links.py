"""A server that stops answering mid-read: the configured time-out notices, the chunk is retried or listed, no hang.

Two ways to stop answering while the connections stay open: the ``xrootd`` process is stopped (SIGSTOP, then
SIGCONT), or the delay proxy of ``benchmarks/_lib/proxy.py`` between reader and server stalls (then resumes). Both
hit the 4th chunk of a run over this module's own server (root:// and https://). Runs are compared bin for bin
with a clean run over the local files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uproot

from deploy.xrootd import XRootDServer
from processors import chunks
from processors.engine import process_files
from processors.generate import generate_dataset
from processors.histograms import read_histograms
from processors.processor import DiphotonProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _lib.proxy import DelayProxy  # noqa: E402
from test_streaming import run_cli  # noqa: E402

pytestmark = [
    pytest.mark.xrootd,
    pytest.mark.skipif(subprocess.run(["which", "xrootd"], capture_output=True).returncode != 0, reason="no xrootd"),
    pytest.mark.timeout(120),
]

#: The time-out of every remote read (processing.timeout): short, so that an outage costs seconds.
TIMEOUT = 2
#: How long the server stops answering: longer than the time-out, so the read in flight must time out.
OUTAGE = 2 * TIMEOUT + 1
#: How late after the outage began its read may fail: the time-out, the XRootD client's 1 s resolution
#: (processors.tuning.XROOTD_CLIENT_ENV) and a margin for a loaded 2-core machine.
DETECTED_WITHIN = TIMEOUT + 2.0
#: No run here may take longer (the outage, its retries and the rest of the run).
BOUND = 45.0
PERIODS = ("data15_periodD", "data15_periodE", "data16_periodA")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """About 40k events in three files of 2,500-event clusters: 17 chunks at ``chunksize=1``."""
    return generate_dataset(tmp_path_factory.mktemp("slow") / "data", events=40_000, periods=PERIODS, basket_entries=2_500, seed=23)


@pytest.fixture(scope="module")
def clean(dataset):
    result = process_files([str(f) for f in dataset.files], processor=DiphotonProcessor(), chunksize=1, progress=False)
    assert result.failed_chunks == [] and result.events_processed == dataset.events_written and result.chunks == 17
    return result


@pytest.fixture
def server(dataset, monkeypatch):
    """root:// and https:// over the dataset's directory, its certificate trusted."""
    with XRootDServer(dataset.files[0].parent) as running:
        monkeypatch.setenv("SSL_CERT_FILE", str(running.handle.ca_file))
        try:
            yield running
        finally:
            if running.running:
                os.kill(running.handle.pid, signal.SIGCONT)  # never leave a stopped daemon behind


def equal(histograms, reference):
    return all((histograms[name].values() == reference[name].values()).all() for name in ("mass", "cutflow"))


class Outage:
    """Stops the server answering (``stop``) when the 4th chunk starts and lets it answer again (``go_on``)
    ``seconds`` later (never, for None, until :meth:`end`); records when the outage began, when reads failed
    (each failure drops the file's cached handle: ``chunks.trees.discard``) and each chunk's attempts."""

    def __init__(self, monkeypatch, stop, go_on, seconds: float | None = OUTAGE) -> None:
        self.stop, self.go_on, self.seconds = stop, go_on, seconds
        self.began: float | None = None
        self.failures: list[float] = []
        self.attempts: list[int] = []
        self.timer: threading.Timer | None = None
        self.ended = False
        original_run, original_discard = chunks.run_chunk, chunks.trees.discard

        def run_chunk(chunk, **options):
            if len(self.attempts) == 3:
                self.began = time.monotonic()
                self.stop()
                if seconds is not None:
                    self.timer = threading.Timer(seconds, self.end)
                    self.timer.start()
            self.attempts.append(0)
            outcome = original_run(chunk, **options)
            self.attempts[-1] = outcome.attempts
            return outcome

        def discard(url):
            self.failures.append(time.monotonic())
            original_discard(url)

        monkeypatch.setattr(chunks, "run_chunk", run_chunk)
        monkeypatch.setattr(chunks.trees, "discard", discard)

    def end(self) -> None:
        if self.began is not None and not self.ended:
            self.ended = True
            self.go_on()

    def finish(self) -> None:
        if self.timer is not None:
            self.timer.join()
        self.end()

    def check_detected(self) -> None:
        """The outage began mid-run and the read in flight failed within the time-out (plus resolution)."""
        assert self.began is not None, "the run ended before the 4th chunk"
        first = min(t for t in self.failures if t >= self.began)
        assert first - self.began <= DETECTED_WITHIN
        assert first - self.began >= TIMEOUT - 1.0  # the time-out, not a refused connection, ended the read


def sigstop(server):
    pid = server.handle.pid
    return lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["root", "https"])
def test_a_stopped_server_is_timed_out_and_the_chunk_retried_after_it_continues(
    server, dataset, clean, tmp_path, capsys, monkeypatch, protocol
):
    """SIGSTOP at the 4th chunk, SIGCONT 5 s later; the time-out and retries come from the config file."""
    config = tmp_path / "config.yaml"
    config.write_text(f"processing:\n  timeout: {TIMEOUT}\n  retries: 6\n  chunksize: 1\n")
    metadata = server.write_metadata(tmp_path)[protocol]
    outage = Outage(monkeypatch, *sigstop(server))
    started = time.monotonic()
    try:
        status, err = run_cli(["process", "--config", str(config), "--metadata", str(metadata), "--workers", "0",
                               "--no-progress", "--out", str(tmp_path / "out")], capsys)
    finally:
        outage.finish()
    wall = time.monotonic() - started
    assert status == 0, err
    outage.check_detected()
    assert outage.attempts[3] > 1 and wall < BOUND
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed_chunks"] == [] and summary["chunks"] == 17
    assert summary["events_processed"] == summary["events_in_files"] == dataset.events_written
    assert equal(read_histograms(tmp_path / "out" / "histograms.json"), clean.histograms)


@pytest.fixture
def proxied(server, request):
    """(proxy, URLs through it) for the protocol ``request.param``."""
    protocol = request.param
    port = server.port if protocol == "root" else server.http_port
    with DelayProxy(port) as proxy:
        yield proxy, [url.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{proxy.port}/") for url in server.urls(protocol)]


def stalled_run(proxy, urls, monkeypatch, *, retries: int, seconds: float | None):
    outage = Outage(monkeypatch, proxy.stall, proxy.resume, seconds)
    started = time.monotonic()
    try:
        result = process_files(urls, processor=DiphotonProcessor(), chunksize=1, retries=retries, backoff=0.25,
                               timeout=TIMEOUT, progress=False)
    finally:
        outage.finish()
    assert time.monotonic() - started < BOUND
    assert proxy.bytes_down > 0 and proxy.connections >= 1  # the reads went through the proxy
    return outage, result


@pytest.mark.slow
@pytest.mark.parametrize("proxied", ["root", "https"], indirect=True)
def test_a_stalled_link_is_timed_out_and_the_chunk_retried_after_it_resumes(proxied, dataset, clean, monkeypatch):
    proxy, urls = proxied
    outage, result = stalled_run(proxy, urls, monkeypatch, retries=6, seconds=OUTAGE)
    outage.check_detected()
    assert outage.attempts[3] > 1
    assert result.failed_chunks == [] and result.chunks == 17
    assert result.events_processed == result.events_in_files == dataset.events_written
    assert equal(result.histograms, clean.histograms)


@pytest.mark.slow
@pytest.mark.parametrize("proxied", ["root", "https"], indirect=True)
def test_a_stall_outlasting_the_retries_lists_the_chunk_with_its_reason(proxied, dataset, monkeypatch):
    """No retry, a stall longer than the time-out: the chunk in flight is listed as a time-out; the chunks after
    the stall are processed; processed and listed events make up every event."""
    proxy, urls = proxied
    outage, result = stalled_run(proxy, urls, monkeypatch, retries=0, seconds=TIMEOUT + 1.5)
    outage.check_detected()
    failed = result.failed_chunks
    assert failed and outage.attempts[3] == 1
    assert all(f.kind == "transient" and f.entry_stop is not None for f in failed), failed
    assert all(re.search("(?i)expired|time-out|timed out", f.error) for f in failed), failed
    assert result.events_processed + sum(f.entry_stop - f.entry_start for f in failed) == dataset.events_written
    assert result.events_processed >= dataset.events_written // 2


def test_a_root_open_costs_one_read_and_a_file_smaller_than_that_read_is_read_whole(server, dataset, tmp_path):
    """uproot reads a file's header, keys, streamers and TTree in 3 requests by default; the generator's files keep
    them in their first 64 KiB, which the engine's first root:// read fetches (``chunks.ROOT_BEGIN_CHUNK``)."""
    columns = tuple(DiphotonProcessor.columns)
    url = server.urls("root")[0]
    with uproot.open(url, timeout=5) as plain:
        plain["analysis"]
        assert plain.file.source.num_requests == 3  # uproot's default: header, then keys, then streamers and TTree
    tree = chunks.open_tree(url, "analysis", columns, timeout=5)
    try:
        assert tree.file.source.num_requests == 1
        assert tree.num_entries == uproot.open(dataset.files[0])["analysis"].num_entries
    finally:
        tree.file.close()
    small = tmp_path / "small"
    small.mkdir()
    with uproot.recreate(small / "tiny.root") as file:
        file.mktree("analysis", {"x": np.float32}).extend({"x": np.arange(10, dtype=np.float32)})
    assert (small / "tiny.root").stat().st_size < chunks.ROOT_BEGIN_CHUNK
    with XRootDServer(small, http_port=None) as tiny:
        tree = chunks.open_tree(tiny.urls("root")[0], "analysis", (), timeout=5)
        try:
            assert tree["x"].array(library="np").tolist() == list(range(10))
        finally:
            tree.file.close()
