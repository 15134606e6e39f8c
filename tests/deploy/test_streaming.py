"""Streaming from a real XRootD server on 127.0.0.1 while it is stopped and restarted: no event is lost.

The server is this module's own :class:`deploy.xrootd.XRootDServer` over a generated dataset (the session's
``xrootd_server`` is shared with other tests, so it is never stopped here). Every run is compared bin for bin with
a clean run over the local files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from coffea.processor import accumulate

from deploy.cli import main
from deploy.xrootd import XRootDServer
from processors import chunks
from processors.engine import inspect_file, plan_chunks, process_files
from processors.generate import generate_dataset
from processors.histograms import read_histograms
from processors.processor import DiphotonProcessor

# The slow processor must be importable by the Dask workers, which get this process's sys.path.
sys.path.insert(0, str(Path(__file__).parents[1] / "processors"))
from _photon_files import write_photon_file  # noqa: E402
from test_faults import PERIODS, SlowDiphotonProcessor  # noqa: E402

pytestmark = [
    pytest.mark.xrootd,
    pytest.mark.skipif(subprocess.run(["which", "xrootd"], capture_output=True).returncode != 0, reason="no xrootd"),
    pytest.mark.timeout(120),
]

#: Short time-outs and back-off: a stopped server costs seconds, not minutes. Retrying 0.25, 0.5, 1, 2, 4, 8 s
#: after a failure (6 retries, 15.75 s in all) outlasts the 3 s outage plus the restart.
FAST = dict(chunksize=1, timeout=2, backoff=0.25, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """About 40k events in three files of 2,500-event clusters: 17 chunks at ``chunksize=1``."""
    return generate_dataset(tmp_path_factory.mktemp("stream") / "data", events=40_000, periods=PERIODS, basket_entries=2_500, seed=5)


@pytest.fixture(scope="module")
def local_chunks(dataset):
    """The chunks of each local file, as the engine plans them at ``chunksize=1``."""
    columns = tuple(DiphotonProcessor.columns)
    infos = [inspect_file(str(f), tree="analysis", columns=columns, timeout=5, max_retries=0) for f in dataset.files]
    return {info.file: plan_chunks(info, tree="analysis", chunksize=1, fraction=1.0) for info in infos}


@pytest.fixture(scope="module")
def clean(dataset):
    result = process_files([str(f) for f in dataset.files], processor=DiphotonProcessor(), chunksize=1, progress=False)
    assert result.failed_chunks == [] and result.events_processed == dataset.events_written
    return result


@pytest.fixture
def server(dataset):
    """root:// and https:// (self-signed certificate) over the dataset's directory."""
    with XRootDServer(dataset.files[0].parent) as running:
        yield running


def equal(histograms, reference):
    return all((histograms[name].values() == reference[name].values()).all() for name in ("mass", "cutflow"))


def checkpoints(directory: Path) -> int:
    return len(list(directory.glob("chunk-*.pkl")))


def test_streamed_run_equals_local_run(server, clean, dataset):
    result = process_files(server.urls("root"), processor=DiphotonProcessor(), retries=0, **FAST)
    assert result.failed_chunks == [] and result.chunks == clean.chunks == 17
    assert result.events_processed == result.events_in_files == dataset.events_written
    assert equal(result.histograms, clean.histograms)


@pytest.mark.slow
def test_server_restart_mid_run_on_dask_loses_no_event(server, clean, dataset, dask_scheduler_address, tmp_path):
    from distributed import Client

    checkpoint, seen, finished = tmp_path / "checkpoint", {}, threading.Event()

    def stop_then_restart():
        while checkpoints(checkpoint) < 3 and not finished.is_set():
            time.sleep(0.01)
        server.stop()
        time.sleep(3)
        seen["done_while_down"] = checkpoints(checkpoint)
        server.start()

    chaos = threading.Thread(target=stop_then_restart)
    chaos.start()
    try:
        with Client(dask_scheduler_address) as client:
            result = process_files(
                server.urls("root"), processor=SlowDiphotonProcessor(), client=client, retries=6,
                checkpoint_dir=checkpoint, **FAST,
            )
    finally:
        finished.set()
        chaos.join()
    assert 3 <= seen["done_while_down"] < result.chunks  # the server was down while chunks were left
    assert result.failed_chunks == []
    assert result.events_processed == result.events_in_files == dataset.events_written
    assert equal(result.histograms, clean.histograms)


# Run in a fresh interpreter without the XRD_* settings of tests/conftest.py: the engine's own client settings
# must bridge the restart. The server stops when the 4th chunk starts and is back 3 s later.
RESTART_SCRIPT = """
import json, os, sys, threading
from deploy.xrootd import XRootDServer
from processors import chunks
from processors.engine import process_files
from processors.processor import DiphotonProcessor

server = XRootDServer(sys.argv[1])
server.start()
os.environ["SSL_CERT_FILE"] = str(server.handle.ca_file)
calls, original, restart = [], chunks.run_chunk, threading.Timer(3, server.start)

def run_chunk(chunk, **options):
    calls.append(chunk)
    if len(calls) == 4:
        server.stop()
        restart.start()
    outcome = original(chunk, **options)
    calls[-1] = outcome.attempts
    return outcome

chunks.run_chunk = run_chunk
try:
    result = process_files(
        server.urls(sys.argv[2]), processor=DiphotonProcessor(), chunksize=1, retries=6, backoff=0.25, timeout=2, progress=False
    )
finally:
    if restart.is_alive():
        restart.join()
    server.close()
mass = result.histograms["mass"].values().tolist()
print(json.dumps(dict(failed=len(result.failed_chunks), events=result.events_processed, attempts=calls, mass=mass)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["root", "https"])
def test_server_restart_bridged_by_the_engines_own_client_settings(clean, dataset, tmp_path, protocol):
    script = tmp_path / "restart.py"
    script.write_text(textwrap.dedent(RESTART_SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, str(script), str(dataset.files[0].parent), protocol], env=env, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == 0 and report["events"] == dataset.events_written
    assert report["attempts"][3] > 1  # the 4th chunk met the stopped server and was retried
    assert report["mass"] == clean.histograms["mass"].values().tolist()


def run_cli(argv, capsys):
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["root", "https"])
def test_server_gone_for_good_lists_exactly_the_unprocessed_ranges_then_resume_completes(
    server, clean, dataset, local_chunks, tmp_path, capsys, monkeypatch, protocol
):
    monkeypatch.setenv("SSL_CERT_FILE", str(server.handle.ca_file))
    metadata, files = server.write_metadata(tmp_path)[protocol], server.urls(protocol)
    out = tmp_path / "out"
    # The timeout only bounds reads from a live server (a stopped one refuses at once); 2 s is too short for
    # https on a loaded 2-core machine, where reads then time out before the server is even stopped.
    timeout = "2" if protocol == "root" else "15"
    argv = ["process", "--metadata", str(metadata), "--workers", "0", "--chunksize", "1", "--retries", "1",
            "--timeout", timeout, "--no-progress", "--out", str(out)]  # fmt: skip
    started, original = [], chunks.run_chunk

    def stop_at_fourth_chunk(chunk, **options):
        started.append(chunk)
        if len(started) == 4:
            server.stop()
        return original(chunk, **options)

    monkeypatch.setattr(chunks, "run_chunk", stop_at_fourth_chunk)
    status, err = run_cli(argv, capsys)

    plan = list(local_chunks.values())
    assert [len(p) for p in plan] == [2, 7, 8]
    summary = json.loads((out / "summary.json").read_text())
    failed = [(f["file"], f["entry_start"], f["entry_stop"], f["kind"]) for f in summary["failed_chunks"]]
    assert status == 1 and failed
    assert f"error: {len(failed)} chunk(s) failed ({len(failed)} transient)" in err and "--resume" in err
    assert all(re.search("(?i)connect|expired", f["error"]) for f in summary["failed_chunks"]), summary
    if protocol == "root":
        # In one process the chunks run in file order: file 0 (2 chunks), then file 1, whose 2nd chunk meets the
        # stopped server; file 2 cannot even be opened.
        expected_failed = [(files[1], c.entry_start, c.entry_stop, "transient") for c in plan[1][1:]]
        assert failed == [*expected_failed, (files[2], 0, None, "transient")]
    # Over https, which ranges meet the stopped server depends on what uproot had already fetched; whatever they
    # are, the failed ranges are planned chunks (or whole files) and, with the processed ones, tile every file.
    whole = {url for url, _, stop, _ in failed if stop is None}
    ranges = {(url, start, stop) for url, start, stop, _ in failed if stop is not None}
    planned = {(url, c.entry_start, c.entry_stop) for url, chunks_ in zip(files, plan) for c in chunks_}
    assert ranges <= planned and not any(url in whole for url, _, _ in ranges)
    processed = [c for url, chunks_ in zip(files, plan) for c in chunks_
                 if url not in whole and (url, c.entry_start, c.entry_stop) not in ranges]
    assert processed and summary["events_processed"] == sum(c.entry_stop - c.entry_start for c in processed)
    # The partial histograms are saved and hold exactly the processed ranges.
    options = dict(processor_type=DiphotonProcessor, processor_config={}, dataset="data", timeout=5, max_retries=0)
    partial = accumulate([original(c, **options).output for c in processed])
    assert equal(read_histograms(out / "histograms.json"), partial)

    monkeypatch.setattr(chunks, "run_chunk", original)
    server.start()
    # The XRootD client keeps a just-failed server marked down for StreamErrorWindow (1 s here): the resume's
    # retries must outlast it (0.5 + 1 + 2 s), as a user resuming later never notices.
    resume = [*argv, "--resume"]
    resume[resume.index("--retries") + 1] = "3"
    status, err = run_cli(resume, capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert status == 0, err
    assert summary["failed_chunks"] == [] and summary["resumed_chunks"] == len(processed) and summary["chunks"] == 17
    assert summary["events_processed"] == summary["events_in_files"] == dataset.events_written
    assert equal(read_histograms(out / "histograms.json"), clean.histograms)


def test_broken_files_over_root_fail_like_local_ones_without_retries(dataset, tmp_path):
    """Truncated, header-only, branch-less and missing files: same kinds and ranges over root:// as locally."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(dataset.files[0], served / "good.root")
    original = dataset.files[1].read_bytes()
    (served / "truncated.root").write_bytes(original[: int(len(original) * 0.6)])
    (served / "header_only.root").write_bytes(original[:2000])
    write_photon_file(served / "no_branch.root", 5_000, seed=3, drop=("photon_isTightID",))
    names = ["good.root", "truncated.root", "header_only.root", "no_branch.root", "missing.root"]
    local = process_files([str(served / name) for name in names], processor=DiphotonProcessor(), strict=False, **FAST)
    with XRootDServer(served, http_port=None) as server:
        urls = [server.handle.root_url + "/" + name for name in names]
        # 3 retries 1 s apart would cost 7 s per failure: permanent answers must not be retried.
        remote = process_files(urls, processor=DiphotonProcessor(), strict=False, retries=3, **{**FAST, "backoff": 1.0})

    def failures(result):
        return [(Path(f.file).name, f.entry_start, f.entry_stop, f.kind) for f in result.failed_chunks]

    kinds = [kind for *_, kind in failures(local)]
    assert kinds.count("corrupt") >= 2 and kinds[-2:] == ["schema", "missing"]
    assert failures(remote) == failures(local)
    assert "photon_isTightID" in remote.failed_chunks[-2].error and "no such file" in remote.failed_chunks[-1].error
    assert remote.events_processed == local.events_processed > 0
    assert equal(remote.histograms, local.histograms)
    assert remote.wall_time < 5


@pytest.fixture(scope="module")
def quarter_scale(tmp_path_factory):
    """A generated data set at a quarter of its nominal luminosity (``generate --scale 0.25``, 3.61 fb^-1 nominal)."""
    return generate_dataset(tmp_path_factory.mktemp("quarter") / "data", lumi_fb=3.61, scale=0.25, seed=17)


@pytest.mark.parametrize("protocol", ["root", "https"])
def test_files_served_with_their_metadata_elsewhere_carry_their_own_luminosity(
    quarter_scale, tmp_path, capsys, monkeypatch, protocol
):
    """serve's metadata written away from the data (``--metadata-dir``): the truth.json on the server counts."""
    assert quarter_scale.truth["lumi_fb"] == pytest.approx(3.61 * 0.25)
    with XRootDServer(quarter_scale.files[0].parent) as served:
        monkeypatch.setenv("SSL_CERT_FILE", str(served.handle.ca_file))
        (tmp_path / "elsewhere").mkdir()
        metadata, first = served.write_metadata(tmp_path / "elsewhere")[protocol], served.urls(protocol)[0]
        status, err = run_cli(["process", "--metadata", str(metadata), "--workers", "0", "--fraction", "0.5",
                               "--no-progress", "--out", str(tmp_path / "out")], capsys)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert status == 0, err
    assert summary["lumi_fb"] == pytest.approx(0.5 * quarter_scale.truth["lumi_fb"], rel=1e-12)
    assert summary["lumi_source"] == first.rsplit("/", 1)[0] + "/truth.json"


def test_an_untrusted_certificate_fails_at_once_naming_ssl_cert_file_and_the_served_certificate(
    dataset, tmp_path, capsys, monkeypatch
):
    import certifi

    with XRootDServer(dataset.files[0].parent) as served:
        metadata = served.write_metadata(tmp_path)["https"]
        argv = ["process", "--metadata", str(metadata), "--workers", "0", "--retries", "3", "--no-progress",
                "--out", str(tmp_path / "out")]
        slept = []
        monkeypatch.setattr(time, "sleep", lambda seconds: slept.append(seconds))  # a retry would back off
        for cafile, trusted in ((None, "SSL_CERT_FILE is not set"), (certifi.where(), f"SSL_CERT_FILE={certifi.where()} does not sign it")):
            if cafile is None:
                monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            else:
                monkeypatch.setenv("SSL_CERT_FILE", cafile)
            status, err = run_cli(argv, capsys)
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert status == 2 and len(lines) == 1, err
            assert f"the server's certificate is not trusted (self-signed certificate; {trusted})" in lines[0]
            assert lines[0].endswith(f"(`opendata-stats serve` printed it: export SSL_CERT_FILE={served.handle.ca_file})")
            assert slept == [] and not (tmp_path / "out" / "summary.json").exists()
        monkeypatch.undo()
        monkeypatch.setenv("SSL_CERT_FILE", str(served.handle.ca_file))
        status, err = run_cli(argv, capsys)
    assert status == 0, err
