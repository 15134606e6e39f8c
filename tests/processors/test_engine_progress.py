"""The processing bar: its total is fixed before the first update and never changes; it ends full."""

from __future__ import annotations

import os

import pytest
from _photon_files import write_photon_file
from _progress_bars import RecordingBar

from processors import engine
from processors.engine import process_files
from processors.processor import DiphotonProcessor


@pytest.fixture
def bars(monkeypatch):
    return RecordingBar.install(monkeypatch, engine)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("progress")
    return [str(write_photon_file(directory / f"p{i}.root", n, seed=20 + i, parts=4))
            for i, n in enumerate((12_000, 3_000, 8_000))]


def test_the_total_is_the_files_bytes_before_the_first_update(files, bars):
    result = process_files(files, processor=DiphotonProcessor(), chunksize=1_000, progress=True)
    [bar] = bars
    total = sum(os.path.getsize(f) for f in files)
    assert bar.options["unit"] == "B"
    assert bar.total == total
    # Many chunks, each one update; the total was the same at every one of them, and no step went back.
    assert len(bar.steps) >= result.chunks > 3
    assert set(bar.totals_at_updates) == {total}
    assert min(bar.steps) > 0
    assert bar.n == pytest.approx(total) and bar.closed
    assert bar.postfix == f"{result.events_processed:,} events"


def test_with_a_missing_file_the_bar_counts_files_and_still_ends_full(files, bars, tmp_path):
    missing = str(tmp_path / "missing.root")
    listed = [files[0], missing, files[2]]
    result = process_files(listed, processor=DiphotonProcessor(), chunksize=1_000, progress=True, strict=False)
    assert [f.file for f in result.failed_chunks] == [missing]
    [bar] = bars
    # The missing file's size is unknown, so the bar counts files, fixed from the start.
    assert bar.options["unit"] == "file" and bar.total == 3
    assert set(bar.totals_at_updates) == {3}
    assert bar.n == pytest.approx(3)
    # The missing file moved the bar by one whole file; the others by shares of theirs.
    assert max(bar.steps) == pytest.approx(1.0) and min(bar.steps) < 0.5
