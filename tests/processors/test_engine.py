"""The chunk engine: planning, Dask vs in-process, fraction, checkpoints and resume, failures.

Runs are checked by invariants: every planned chunk is counted once (processed or listed as failed), the
histograms equal a reference computed another way, and failed plus processed entries make all entries.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import uproot
from _photon_files import BAD_FILES, _not_root, write_photon_file

from deploy.clusters import dask_client
from processors import checkpoint, chunks, engine, planning
from processors.engine import process_files
from processors.errors import ProcessingError
from processors.executors import DaskExecutor
from processors.planning import Chunk
from processors.processor import DiphotonProcessor

ENTRIES = (30_000, 20_000, 25_000)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photons")
    return [str(write_photon_file(directory / f"f{i}.root", n, seed=i, parts=3)) for i, n in enumerate(ENTRIES)]


@pytest.fixture(scope="module")
def clean(files):
    return process_files(files, processor=DiphotonProcessor(), chunksize=1, progress=False)


def same_histograms(a, b):
    return a.histograms["mass"] == b.histograms["mass"] and a.histograms["cutflow"] == b.histograms["cutflow"]


def tiles(ranges, entries):
    """True if the (start, stop) ranges cover [0, entries) exactly once."""
    edges = sorted(ranges)
    return bool(edges) and edges[0][0] == 0 and edges[-1][1] == entries and all(
        a[1] == b[0] for a, b in zip(edges, edges[1:]))


def test_a_task_reads_its_chunks_one_at_a_time_and_loses_no_event(files, clean, monkeypatch):
    read, original = [], chunks.run_chunk
    monkeypatch.setattr(chunks, "run_chunk", lambda chunk, **options: read.append(chunk) or original(chunk, **options))
    result = process_files(files, processor=DiphotonProcessor(), chunksize=1, task_entries=20_000, progress=False)
    # Every chunk is read once, and each file's chunks tile its entries.
    assert result.chunks == clean.chunks == len(read) == len(set(read)) and result.tasks <= result.chunks
    for name, entries in zip(files, ENTRIES):
        assert tiles([(c.entry_start, c.entry_stop) for c in read if c.file == name], entries)
    assert max(c.entry_stop - c.entry_start for c in read) == 10_000  # one cluster in memory at a time
    assert result.events_processed == result.events_in_files == sum(ENTRIES)
    assert same_histograms(result, clean)


@pytest.mark.slow
def test_grouped_tasks_on_dask_equal_single_process(files, clean, client):
    result = process_files(files, processor=DiphotonProcessor(), client=client, chunksize=1, task_entries=10**9,
                           progress=False)
    # Unbounded tasks: each file is read whole by the task that opens it.
    assert result.tasks == len(files) and result.chunks == clean.chunks and result.failed_chunks == []
    assert result.events_processed == sum(ENTRIES) and same_histograms(result, clean)


def test_task_entries_default_to_two_chunks(files, monkeypatch):
    sizes, original = [], chunks.run_chunks
    monkeypatch.setattr(chunks, "run_chunks", lambda chunk_list, **options: sizes.append(len(chunk_list))
                        or original(chunk_list, **options))
    one = process_files(files[:1], processor=DiphotonProcessor(), chunksize=10_000, progress=False)
    # Three chunks of 10000: no task reads more than two, and every chunk is read once.
    assert one.chunks == 3 and sum(sizes) == 3 and max(sizes) == 2


def test_every_event_is_processed(files, clean):
    assert clean.events_in_files == clean.events_processed == sum(ENTRIES)
    assert clean.histograms["cutflow"]["data", "all"] == sum(ENTRIES)
    assert clean.chunks == 9 and clean.failed_chunks == []
    assert 0 < clean.wall_time < 60  # seconds of this run, not of the clock's origin


def test_a_file_listed_twice_is_refused_not_half_processed(files, tmp_path, monkeypatch):
    """Listed twice (by the same path, or another path to the same file), a file is refused before anything runs:
    processed, its chunks shared their keys and events went missing without a failed chunk."""
    with pytest.raises(ProcessingError, match=r"f0.root is listed twice \(also as .*f0.root\)"):
        process_files([files[0], files[1], files[0]], processor=DiphotonProcessor(), chunksize=1, progress=False)
    monkeypatch.chdir(os.path.dirname(files[0]))
    with pytest.raises(ProcessingError, match="listed twice"):
        process_files([files[0], os.path.join(".", os.path.basename(files[0]))], processor=DiphotonProcessor(),
                      progress=False)


SMALL = (2_000, 2_400, 2_800, 3_200, 3_600, 4_000, 2_200, 2_600, 3_000, 3_400, 3_800, 4_200)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    return [str(write_photon_file(directory / f"s{i}.root", n, seed=10 + i)) for i, n in enumerate(SMALL)]


@pytest.fixture(scope="module")
def one_by_one(small_files):
    """Each small file processed on its own, merged: the reference of the packed runs."""
    results = [process_files([f], processor=DiphotonProcessor(), progress=False) for f in small_files]
    return {name: sum((r.histograms[name] for r in results[1:]), results[0].histograms[name]) for name in ("mass", "cutflow")}


def test_small_files_share_tasks_and_lose_no_event(small_files, one_by_one):
    result = process_files(small_files, processor=DiphotonProcessor(), progress=False)
    assert result.tasks < len(SMALL) and result.chunks == len(SMALL) and result.failed_chunks == []
    assert result.events_processed == result.events_in_files == sum(SMALL)
    assert result.histograms["mass"] == one_by_one["mass"] and result.histograms["cutflow"] == one_by_one["cutflow"]


def test_packed_files_on_dask_equal_the_reference(small_files, one_by_one, client):
    result = process_files(small_files, processor=DiphotonProcessor(), client=client, progress=False)
    assert result.tasks < len(SMALL) and result.failed_chunks == []
    assert result.events_processed == sum(SMALL)
    assert result.histograms["mass"] == one_by_one["mass"] and result.histograms["cutflow"] == one_by_one["cutflow"]


def test_a_bad_file_in_a_shared_task_is_listed_alone(small_files, tmp_path):
    bad = str(_not_root(tmp_path / "bad.root"))
    files = [*small_files, bad]
    result = process_files(files, processor=DiphotonProcessor(), progress=False, strict=False)
    assert result.tasks < len(files)
    assert [(f.file, f.kind) for f in result.failed_chunks] == [(bad, "corrupt")]
    assert result.events_processed == sum(SMALL)
    with pytest.raises(ProcessingError, match="bad.root: not a readable ROOT file"):
        process_files(files, processor=DiphotonProcessor(), progress=False)


def test_dask_with_two_workers_equals_single_process(files, clean, client):
    distributed = process_files(files, processor=DiphotonProcessor(), client=client, chunksize=1, progress=False)
    assert same_histograms(distributed, clean)
    assert distributed.events_processed == clean.events_processed


class SlowProcessor(DiphotonProcessor):
    """0.2 s per chunk: the worker that opened a file is still busy when the file's later chunks are queued."""

    def process(self, events):
        import time

        time.sleep(0.2)
        return super().process(events)


def _open_files() -> list[str]:
    return sorted({key[0] for key in chunks.trees._trees})


@pytest.mark.slow
def test_large_files_are_read_by_every_free_worker(tmp_path):
    import dask

    large = [str(write_photon_file(tmp_path / f"large{i}.root", 16_000, seed=5 + i, parts=8)) for i in range(2)]
    # Without work stealing, which would move pinned tasks of this length but not of a real chunk's 50 ms.
    with dask.config.set({"distributed.scheduler.work-stealing": False}), dask_client(workers=2, announce=False) as client:
        result = process_files(large, processor=SlowProcessor(), client=client, chunksize=1, progress=False)
        opened = list(client.run(_open_files).values())
    assert result.chunks == 16 and result.failed_chunks == [] and result.events_processed == 32_000
    # Each worker starts one file; only its next chunk is pinned there, so both workers read both files.
    assert opened == [large, large]
    reference = process_files(large, processor=DiphotonProcessor(), progress=False)
    assert same_histograms(result, reference)


@pytest.fixture
def spread_small_files(monkeypatch):
    """Let the tests' small files be started in parts: as if a file could hold one entry per thousandth byte."""
    monkeypatch.setattr(planning, "MIN_BYTES_PER_ENTRY", 1e-3)


def test_a_file_too_small_for_two_chunks_starts_once(tmp_path, client):
    small = str(write_photon_file(tmp_path / "small.root", 3_000, seed=6, parts=3))
    result = process_files([small], processor=DiphotonProcessor(), client=client, progress=False)
    # Its size bounds its entries below one chunk: no second part opens it for nothing.
    assert result.tasks == 1 and result.chunks == 1 and result.events_processed == 3_000


def _start_tasks(stream) -> list[tuple[str, float, float]]:
    return sorted(
        (task["worker"], *(span["start"], span["stop"]))
        for task in stream for span in task["startstops"] if task["key"].startswith("start_files") and span["action"] == "compute"
    )


def _import_engine() -> None:
    import processors.engine  # noqa: F401


@pytest.mark.slow
def test_one_file_starts_on_every_worker_at_once(tmp_path, spread_small_files):
    from distributed import get_task_stream

    large = str(write_photon_file(tmp_path / "large.root", 16_000, seed=5, parts=8))
    with dask_client(workers=2, announce=False) as client:
        client.run(_import_engine)  # a worker's first task would import coffea: seconds that would shift the two
        with get_task_stream(client) as stream:
            result = process_files([large], processor=SlowProcessor(), client=client, chunksize=1, progress=False)
    starts = _start_tasks(stream.data)
    assert len(starts) == 2 and starts[0][0] != starts[1][0]
    assert max(start for _, start, _ in starts) < min(stop for _, _, stop in starts)  # they overlap in time
    assert result.chunks == 8 and result.failed_chunks == [] and result.events_processed == 16_000
    assert same_histograms(result, process_files([large], processor=DiphotonProcessor(), progress=False))


@pytest.mark.slow
def test_a_file_read_in_parts_gives_each_part_worker_its_share_of_the_chunks(tmp_path, spread_small_files):
    from distributed import get_task_stream

    large = str(write_photon_file(tmp_path / "large.root", 16_000, seed=5, parts=8))  # 8 clusters of 2000
    with dask_client(workers=2, announce=False) as client:
        client.run(_import_engine)
        submitted, submit = {}, client.submit

        def recording(function, item, *args, **kwargs):
            future = submit(function, item, *args, **kwargs)
            submitted[future.key] = (kwargs.get("part"), item, kwargs.get("workers"))
            return future

        client.submit = recording
        with get_task_stream(client) as stream:
            result = process_files([large], processor=DiphotonProcessor(), client=client, chunksize=1, progress=False)
    ran_on = {task["key"]: task["worker"] for task in stream.data}
    part_worker = {part: ran_on[key] for key, (part, item, _) in submitted.items() if isinstance(item, list)}
    assert sorted(part_worker) == [0, 1] and part_worker[0] != part_worker[1]
    # Chunk k (k >= 2) is part k % 2's: it goes to the worker that read that part and has the file open.
    further = sorted((chunk.entry_start // 2000, workers) for _, item, workers in submitted.values()
                     if isinstance(item, tuple) for chunk in item)
    assert [index for index, _ in further] == [2, 3, 4, 5, 6, 7]
    assert all(workers == [part_worker[index % 2]] for index, workers in further)
    assert result.chunks == 8 and result.failed_chunks == [] and result.events_processed == 16_000
    assert same_histograms(result, process_files([large], processor=DiphotonProcessor(), progress=False))


def test_a_file_with_fewer_chunks_than_parts_is_counted_once(tmp_path, client, spread_small_files):
    small = str(write_photon_file(tmp_path / "small.root", 3_000, seed=6, parts=1))
    result = process_files([small], processor=DiphotonProcessor(), client=client, progress=False)
    reference = process_files([small], processor=DiphotonProcessor(), progress=False)
    assert result.chunks == 1 and result.failed_chunks == []
    assert result.events_processed == result.events_in_files == 3_000
    assert same_histograms(result, reference)


def test_a_bad_file_started_in_parts_is_listed_once(tmp_path, client, spread_small_files):
    bad = _not_root(tmp_path / "bad.root")
    result = process_files([str(bad)], processor=DiphotonProcessor(), client=client, strict=False, progress=False)
    assert [(f.file, f.entry_stop, f.kind) for f in result.failed_chunks] == [(str(bad), None, "corrupt")]
    with pytest.raises(ProcessingError, match="not a readable ROOT file"):
        process_files([str(bad)], processor=DiphotonProcessor(), client=client, progress=False)


def test_chunk_size_does_not_change_the_result(files, clean):
    assert same_histograms(process_files(files, processor=DiphotonProcessor(), chunksize=10**9, progress=False), clean)


def test_fraction_processes_the_first_share_of_each_file(files):
    result = process_files(files, processor=DiphotonProcessor(), fraction=0.4, progress=False)
    share = sum(int(n * 0.4) for n in ENTRIES)
    assert result.events_in_files == result.events_processed == share
    assert result.entries_total == sum(ENTRIES)
    first = process_files(files[:1], processor=DiphotonProcessor(), fraction=0.4, progress=False)
    reference = uproot.open(files[0])["analysis"].arrays(list(DiphotonProcessor.columns), entry_stop=12_000)
    assert first.histograms["mass"] == DiphotonProcessor().process(reference)["mass"]


def test_resume_after_a_failure_equals_a_clean_run(files, clean, tmp_path):
    local = [shutil.copy(f, tmp_path / f"in{i}.root") for i, f in enumerate(files)]
    hidden = local[1].with_suffix(".away")
    local[1].rename(hidden)
    options = dict(processor=DiphotonProcessor(), chunksize=1, progress=False, checkpoint_dir=tmp_path / "ck")
    partial = process_files([str(p) for p in local], strict=False, **options)
    assert [(f.file, f.kind, f.entry_stop) for f in partial.failed_chunks] == [(str(local[1]), "missing", None)]
    assert partial.events_processed == ENTRIES[0] + ENTRIES[2]

    hidden.rename(local[1])
    resumed = process_files([str(p) for p in local], resume=True, **options)
    assert resumed.resumed_chunks == 6 and resumed.chunks == 9
    assert resumed.failed_chunks == [] and resumed.events_processed == sum(ENTRIES)
    assert same_histograms(resumed, clean)


def test_a_fresh_run_ignores_old_checkpoints(files, tmp_path):
    options = dict(processor=DiphotonProcessor(), progress=False, checkpoint_dir=tmp_path)
    process_files(files[:1], **options)
    assert process_files(files[:1], **options).resumed_chunks == 0
    assert process_files(files[:1], resume=True, **options).resumed_chunks == 1
    other = process_files(files[:1], **{**options, "processor": DiphotonProcessor(bins=30)}, resume=True)
    assert other.resumed_chunks == 0  # another configuration never reuses these


def snapshot(directory):
    return {path.name: path.read_bytes() for path in Path(directory).iterdir()}


def test_the_result_records_each_input_files_size_and_uuid(files, tmp_path):
    missing = str(tmp_path / "gone.root")
    result = process_files([*files[:2], missing], processor=DiphotonProcessor(bins=30), fraction=0.5, strict=False,
                           progress=False)
    expected = [{"file": f, "size": os.path.getsize(f), "uuid": str(uproot.open(f).file.uuid)} for f in files[:2]]
    assert result.identity["files"] == [*expected, {"file": missing, "size": None, "uuid": None}]
    assert result.identity["config"]["bins"] == 30 and result.identity["config"]["fraction"] == 0.5
    assert result.identity["version"] == engine.project_version() != "unknown"


def test_resume_recomputes_the_chunks_of_a_replaced_file_and_keeps_its_old_checkpoints(files, tmp_path):
    """The same path with other content (another UUID and size) is processed again, never taken from the checkpoint."""
    local = [shutil.copy(f, tmp_path / f"in{i}.root") for i, f in enumerate(files[:2])]
    options = dict(processor=DiphotonProcessor(), chunksize=1, progress=False, checkpoint_dir=tmp_path / "ck")
    process_files([str(p) for p in local], **options)
    before = snapshot(tmp_path / "ck")
    write_photon_file(local[1], 12_000, seed=99)  # new data under the old name
    resumed = process_files([str(p) for p in local], resume=True, **options)
    reference = process_files([files[0], str(local[1])], processor=DiphotonProcessor(), progress=False)
    assert resumed.resumed_chunks == 3 and same_histograms(resumed, reference)
    assert resumed.events_processed == ENTRIES[0] + 12_000
    after = snapshot(tmp_path / "ck")
    assert {name: after[name] for name in before} == before  # the old checkpoints stay, byte for byte
    assert resumed.other_checkpoints.count == 3  # in1.root's three old chunks
    assert resumed.other_checkpoints.reasons == (f"in1.root has changed (size {os.path.getsize(files[1])} -> "
                                                 f"{os.path.getsize(local[1])}, UUID {uproot.open(files[1]).file.uuid} -> "
                                                 f"{uproot.open(local[1]).file.uuid})",)


def test_a_run_with_other_settings_keeps_the_checkpoints_and_names_what_differs(files, tmp_path):
    options = dict(chunksize=1, progress=False, checkpoint_dir=tmp_path)
    first = process_files(files[:1], processor=DiphotonProcessor(), **options)
    before = snapshot(tmp_path)
    assert first.other_checkpoints.count == 0 and len(before) == first.chunks == 3
    other = process_files(files[:1], processor=DiphotonProcessor(bins=30), resume=True, **options)
    assert other.resumed_chunks == 0 and other.other_checkpoints.count == 3
    assert other.other_checkpoints.reasons == ("processor settings (bins 60 -> 30)",)
    after = snapshot(tmp_path)
    assert len(after) == 6 and {name: after[name] for name in before} == before
    again = process_files(files[:1], processor=DiphotonProcessor(), **options)  # not resumed: nothing rewritten
    assert snapshot(tmp_path) == after and again.other_checkpoints.count == 3


def test_a_checkpoint_of_another_version_is_not_reused(files, tmp_path, monkeypatch):
    options = dict(processor=DiphotonProcessor(), progress=False, checkpoint_dir=tmp_path)
    monkeypatch.setattr(checkpoint, "project_version", lambda: "0.0.1")
    process_files(files[:1], **options)
    monkeypatch.undo()
    resumed = process_files(files[:1], resume=True, **options)
    assert resumed.resumed_chunks == 0 and resumed.events_processed == ENTRIES[0]
    assert resumed.other_checkpoints.reasons == (f"written by opendata-stats 0.0.1 (this is {engine.project_version()})",)


@pytest.mark.parametrize(("make", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_raise_one_line_errors(files, tmp_path, make, message):
    bad = make(tmp_path / "bad.root")
    with pytest.raises(ProcessingError, match=message) as error:
        process_files([files[0], str(bad)], processor=DiphotonProcessor(), progress=False)
    assert "\n" not in str(error.value) and "bad.root" in str(error.value)


def test_truncated_file_is_a_corrupt_failure(files, tmp_path):
    data = open(files[0], "rb").read()
    truncated = tmp_path / "cut.root"
    truncated.write_bytes(data[: len(data) // 2])
    result = process_files([str(truncated)], processor=DiphotonProcessor(), chunksize=1, progress=False, strict=False)
    # The first cluster lies before the cut and is kept; the others are listed: none is silently lost.
    assert {f.kind for f in result.failed_chunks} == {"corrupt"}
    assert "expected Chunk of length" in result.failed_chunks[0].error
    lost = sum(f.entry_stop - f.entry_start for f in result.failed_chunks)
    assert result.events_processed == 10_000 and lost == 20_000 == result.events_in_files - 10_000


def flaky_open(monkeypatch, failures):
    calls = {"n": 0}
    real = uproot.open

    def open_(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError("connection reset by peer")
        return real(*args, **kwargs)

    monkeypatch.setattr(chunks.uproot, "open", open_)
    monkeypatch.setattr(chunks, "trees", chunks.TreeCache())  # nothing opened before the patch
    return calls


def test_transient_errors_are_retried(files, monkeypatch):
    calls = flaky_open(monkeypatch, failures=2)
    chunk = Chunk(files[1], "analysis", 0, ENTRIES[1])
    outcome = chunks.run_chunk(
        chunk, processor_type=DiphotonProcessor, processor_config={}, dataset="data", timeout=5, max_retries=2, backoff=0.01
    )
    assert outcome.failure is None and outcome.attempts == 3 and outcome.output["events"] == ENTRIES[1]
    assert calls["n"] == 3


def test_exhausted_retries_list_the_chunk_as_transient(files, monkeypatch):
    flaky_open(monkeypatch, failures=100)
    chunk = Chunk(files[1], "analysis", 0, ENTRIES[1])
    outcome = chunks.run_chunk(
        chunk, processor_type=DiphotonProcessor, processor_config={}, dataset="data", timeout=5, max_retries=1, backoff=0.01
    )
    assert outcome.output is None and outcome.attempts == 2
    assert outcome.failure.kind == "transient" and "connection reset" in outcome.failure.error


def test_corrupt_errors_are_not_retried(tmp_path):
    bad = tmp_path / "bad.root"
    bad.write_text("garbage" * 100)
    outcome = chunks.run_chunk(
        Chunk(str(bad), "analysis", 0, 10), processor_type=DiphotonProcessor, processor_config={}, dataset="data",
        timeout=5, max_retries=3, backoff=10.0,
    )
    assert outcome.attempts == 1 and outcome.failure.kind == "corrupt"


def test_bad_options_are_rejected(files):
    for options, message in [
        ({"fraction": 0.0}, "fraction"),
        ({"chunksize": 0}, "chunksize"),
        ({"task_entries": 0}, "task_entries"),
        ({"resume": True}, "checkpoint"),
    ]:
        with pytest.raises(ProcessingError, match=message):
            process_files(files, processor=DiphotonProcessor(), progress=False, **options)
    with pytest.raises(ProcessingError, match="no input files"):
        process_files([], processor=DiphotonProcessor(), progress=False)


class KillsItsWorker(DiphotonProcessor):
    """Base of processors that kill their worker process once: the file ``marker`` remembers that it happened.

    Subclasses name their own options in ``settings`` (rebuilt on the workers through ``config()``) and call
    :meth:`die_once` where they want the worker to die.
    """

    settings: tuple[str, ...] = ()

    def __init__(self, *, marker: str, **options):
        for name in self.settings:
            setattr(self, name, options.pop(name))
        super().__init__(**options)
        self.marker = marker

    def config(self):
        return {**super().config(), "marker": self.marker, **{name: getattr(self, name) for name in self.settings}}

    def die_once(self) -> None:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


class DiesOnce(KillsItsWorker):
    """Kills the worker process running the first chunk of a file, once."""

    def process(self, events):
        if events.metadata["entrystart"] == 0:
            self.die_once()
        return super().process(events)


class DiesMidTask(KillsItsWorker):
    """Kills the worker process running the second chunk of a file, once: the first is done in the same task."""

    def process(self, events):
        if events.metadata["entrystart"] > 0:
            self.die_once()
        return super().process(events)


def test_a_worker_killed_in_the_middle_of_a_task_counts_each_chunk_once(files, clean, tmp_path, client):
    result = process_files(files, processor=DiesMidTask(marker=str(tmp_path / "died")), client=client, chunksize=1,
                           task_entries=10**9, progress=False)
    assert (tmp_path / "died").exists()
    assert result.failed_chunks == [] and result.events_processed == sum(ENTRIES)
    assert same_histograms(result, clean)


@pytest.mark.slow
def test_a_killed_worker_loses_no_chunk(files, clean, tmp_path, client):
    result = process_files(
        files, processor=DiesOnce(marker=str(tmp_path / "died")), client=client, chunksize=1, progress=False
    )
    assert (tmp_path / "died").exists()
    assert result.failed_chunks == [] and result.events_processed == sum(ENTRIES)
    assert same_histograms(result, clean)


@pytest.fixture
def first_answer(monkeypatch):
    """The name of a ``distributed.Event`` that a run sets once it has taken its first start task's answer."""
    from distributed import Event

    name, original = f"first-answer-{uuid.uuid4().hex}", engine.Run.started

    def started(run, done):
        original(run, done)
        if isinstance(run.executor, DaskExecutor):  # not the reference runs in this process
            Event(name, client=run.executor.client).set()

    monkeypatch.setattr(engine.Run, "started", started)
    return name


def wait_for(event: str) -> None:
    """In a task: wait until the client sets the ``distributed.Event`` named ``event``."""
    from distributed import Event

    assert Event(event).wait(timeout=60), event


class DiesInAPart(KillsItsWorker):
    """Kills, once, the worker running the first chunk (``first``) or the one running the other chunk.

    The part that must answer second waits until the run has taken the first answer (``event``), so the order of
    the answers is known: the dying part's first if ``first``, else the other's.
    """

    settings = ("first", "event")

    def process(self, events):
        dies = (events.metadata["entrystart"] == 0) == self.first and not os.path.exists(self.marker)
        if dies != self.first:  # the second start task to answer, dying or not
            wait_for(self.event)
        if dies:
            self.die_once()
        return super().process(events)


@pytest.mark.slow
@pytest.mark.parametrize("first", [True, False], ids=["first-part-dies", "later-part-dies"])
def test_a_part_killed_with_its_worker_is_never_lost(tmp_path, first, spread_small_files, first_answer):
    import dask

    two = str(write_photon_file(tmp_path / "two.root", 4_000, seed=7, parts=2))
    reference = process_files([two], processor=DiphotonProcessor(), chunksize=1, progress=False)
    # No second attempt of a task whose worker died: the engine sees the KilledWorker.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client(workers=2, announce=False) as client:
        result = process_files([two], processor=DiesInAPart(marker=str(tmp_path / "died"), first=first, event=first_answer),
                               client=client, chunksize=1, strict=False, progress=False)
    assert (tmp_path / "died").exists()
    if first:  # the file's first answer is the failure: the whole file is listed, nothing of it counted
        assert [(f.file, f.entry_stop, f.kind) for f in result.failed_chunks] == [(two, None, "worker")]
        assert result.events_processed == result.events_in_files == 0
    else:  # the file was planned by then: the lost part's chunk ran again, and every chunk counts once
        assert result.failed_chunks == [] and result.chunks == 2
        assert result.events_processed == result.events_in_files == 4_000 and same_histograms(result, reference)


class DiesInSecondPart(KillsItsWorker):
    """Kills, once, the worker reading the chunk that starts at ``start``, after the run has taken the other
    part's answer (``event``)."""

    settings = ("start", "event")

    def process(self, events):
        if events.metadata["entrystart"] == self.start and not os.path.exists(self.marker):
            wait_for(self.event)
            self.die_once()
        return super().process(events)


@pytest.mark.slow
def test_the_chunks_of_a_part_killed_with_its_worker_still_run(tmp_path, spread_small_files, first_answer):
    import dask

    four = str(write_photon_file(tmp_path / "four.root", 4_000, seed=7, parts=4))
    reference = process_files([four], processor=DiphotonProcessor(), chunksize=1, progress=False)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client(workers=2, announce=False) as client:
        processor = DiesInSecondPart(marker=str(tmp_path / "died"), start=1_000, event=first_answer)
        result = process_files([four], processor=processor, client=client, chunksize=1, strict=False, progress=False)
    assert (tmp_path / "died").exists()
    # Part 1 (chunk 1) died after part 0 planned the file: chunk 1 ran again, and chunk 3, part 1's share, ran too.
    assert result.failed_chunks == [] and result.chunks == 4
    assert result.events_processed == result.events_in_files == 4_000 and same_histograms(result, reference)


class DiesOnFile(KillsItsWorker):
    """Kills the worker process reading the file named ``name``, once."""

    settings = ("name",)

    def process(self, events):
        if os.path.basename(events.metadata["filename"]) == self.name:
            self.die_once()
        return super().process(events)


@pytest.mark.slow
@pytest.mark.parametrize("allowed_failures", [3, 0], ids=["retried", "not-retried"])
def test_a_worker_killed_in_a_shared_task_loses_no_file(small_files, one_by_one, tmp_path, allowed_failures, monkeypatch):
    import dask

    packed, pack = [], engine.pack_files

    def recorded(*args, **kwargs):
        groups = pack(*args, **kwargs)
        packed.extend(groups)
        return groups

    monkeypatch.setattr(engine, "pack_files", recorded)
    # With both workers up, the four largest files start alone (two per worker); s9, the largest of the others,
    # leads the first shared task.
    processor = DiesOnFile(marker=str(tmp_path / "died"), name="s9.root")
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}), \
            dask_client(workers=2, announce=False) as client:
        client.wait_for_workers(2, timeout=60)
        result = process_files(small_files, processor=processor, client=client, strict=False, progress=False)
    monkeypatch.undo()
    [shared] = [group for group in packed if small_files[9] in group]
    assert (tmp_path / "died").exists() and len(shared) > 1
    lost = [f.file for f in result.failed_chunks]
    if allowed_failures:  # the shared task ran again on the other worker, whole
        assert lost == [] and result.events_processed == sum(SMALL)
        assert result.histograms["mass"] == one_by_one["mass"] and result.histograms["cutflow"] == one_by_one["cutflow"]
        return
    # Every file of the task is listed, whole and as the worker's failure (and so is every file of any other task
    # the scheduler had given that worker); the others are complete and counted once: listed and processed entries
    # make all entries.
    assert set(shared) <= set(lost) and len(set(lost)) == len(lost)
    assert all(set(group) <= set(lost) or not set(group) & set(lost) for group in packed)  # whole tasks
    assert all(f.entry_stop is None and f.kind == "worker" for f in result.failed_chunks)
    kept = [f for f in small_files if f not in lost]
    reference = process_files(kept, processor=DiphotonProcessor(), progress=False)
    assert result.events_processed == result.events_in_files == reference.events_processed
    assert result.events_processed + sum(SMALL[small_files.index(f)] for f in lost) == sum(SMALL)
    assert same_histograms(result, reference)


def resident_kib(path: str) -> int:
    """This process's resident pages of the memory-mapped ``path`` (Linux smaps), in KiB."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
            inside = line.rstrip().endswith(path)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_kept_open_local_file_holds_no_resident_pages_after_a_chunk(files, monkeypatch):
    # Without the release, a worker's memory grows with the size of the files it keeps open.
    monkeypatch.setattr(chunks, "trees", chunks.TreeCache())
    path = str(Path(files[1]).resolve())
    outcome = chunks.run_chunk(
        Chunk(path, "analysis", 0, ENTRIES[1]), processor_type=DiphotonProcessor, processor_config={},
        dataset="data", timeout=5, max_retries=0,
    )
    assert outcome.failure is None and outcome.output["events"] == ENTRIES[1]
    ttree = chunks.trees.get(path, "analysis", tuple(DiphotonProcessor.columns), timeout=5)  # still open, mapped
    assert isinstance(ttree.file.source, uproot.source.file.MemmapSource)
    assert resident_kib(path) == 0
    ttree.arrays(list(DiphotonProcessor.columns))  # a read without the release leaves the pages resident
    assert resident_kib(path) > 0
    chunks.trees.clear()
