"""``opendata-stats run`` says what it is doing: a line as each step starts, bars that move, no long silence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

from deploy.progress import Steps, counting, live_step


def test_steps_echo_each_line_once_when_not_live(capsys):
    lines: list[str] = []
    with Steps(lines.append, live=False) as steps:
        steps("  first")
        steps("  second")
    assert lines == ["  first", "  second"]
    assert capsys.readouterr().err == ""


def redrawing() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("redraw")]


def test_live_steps_count_their_seconds_on_stderr_and_stop_their_thread(capsys):
    lines: list[str] = []
    with Steps(lines.append, live=True) as steps:
        steps("  first")
        time.sleep(1.2)  # at least two redraws
        steps("  second")
    err = capsys.readouterr().err
    assert lines == []
    drawn = [part for part in re.split(r"[\r\n]", err) if part.strip()]
    assert drawn[0] == "  first [00:00]" and drawn[-1] == "  second [00:00]"
    assert "  first [00:01]" in drawn and len([d for d in drawn if d.startswith("  first")]) >= 3
    assert redrawing() == []


def test_a_failing_step_still_ends_its_line(capsys):
    with pytest.raises(ValueError), live_step("  doomed"):
        assert redrawing() == ["redraw   doomed"]
        raise ValueError("no")
    assert redrawing() == []
    assert capsys.readouterr().err.endswith("  doomed [00:00]\n")


def test_counting_echoes_its_line_when_not_live(capsys):
    lines: list[str] = []
    with counting("  3 things", total=3, unit="thing", echo=lines.append, live=False) as bar:
        for _ in range(3):
            bar.update()
    assert lines == ["  3 things"] and capsys.readouterr().err == ""


#: What ``run`` shows on stderr, in this order (each a line's start).
STEPS = [
    "loading the analysis libraries",
    "starting a local Dask cluster (1 worker process)",
    "Dask dashboard: ",
    "[1/5] dataset",
    "generating: 100%",
    "[2/5] processing on Dask",
    "processing: 100%",
    "[3/5] background fit, workspace, signal strength, significance",
    "  background fit: polynomial degree by F-tests [",
    "  workspace and signal strength (cabinetry fit) [",
    "  discovery significance (pyhf, asymptotic q0) [",
    "  profile-likelihood significance and plots [",
    "  simulation model: templates, spurious signal, fit, significance [",
    "[4/5] mass scan on Dask",
    "  profile-likelihood fits at 3 masses on Dask, and plots [",
    "  look-elsewhere effect: 200 background-only toys [",
    "[5/5] PatchSet hypotest scan on Dask",
    "  loading the likelihoods [",
    "  CLs of 3 patches on Dask: 100%",
    "  upper limits of 3 patches on Dask: 100%",
    "stopping the local Dask cluster [",
]


@pytest.mark.slow
def test_run_shows_every_step_and_is_never_silent_for_long(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("look_elsewhere:\n  toys: 200\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "deploy.cli", "run", "--config", str(config), "--out", str(tmp_path / "out"),
               "--scale", "0.01", "--workers", "1", "--masses", "120:130:3"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    fragments: list[tuple[float, str]] = []  # each piece of stderr between two line ends or carriage returns
    pending = b""
    while chunk := process.stderr.read1(65536):
        now = time.perf_counter()
        *complete, pending = re.split(rb"[\r\n]", pending + chunk)
        fragments += [(now, part.decode()) for part in complete if part.strip()]
    assert process.wait(timeout=60) == 0, "\n".join(text for _, text in fragments[-20:])

    texts = [text for _, text in fragments]
    position = 0
    for step in STEPS:
        found = next((i for i in range(position, len(texts)) if texts[i].startswith(step)), None)
        assert found is not None, f"{step!r} missing after {texts[position - 1] if position else 'the start'!r}"
        position = found
    # From the first line on, stderr moves at least every few seconds (the live lines redraw twice a second).
    gaps = [later - earlier for (earlier, _), (later, _) in zip(fragments, fragments[1:])]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[longest] < 3.0, f"{gaps[longest]:.1f} s of silence after {texts[longest]!r}"
