"""Global significance: the toys' fast statistic against the mass scan's full method, the toys against
Gross-Vitells and the asymptotic q0 distribution, resuming a killed run, identity checks, Dask batches."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from _toys import make_toy

from stats import lee, profile
from stats.errors import HistogramError, IdentityMismatchError, StatsError
from stats.mass_scan import scan_masses

#: A coarser grid than the default (1 GeV steps) for the tests about bookkeeping.
COARSE = np.arange(110.0, 160.0, 1.0)


def _background(counts, edges, degree=4):
    basis = profile.polynomial_basis(edges, degree)
    return basis @ profile.fit_poisson(counts, basis).params


def _comparable(result):
    record = result.record()
    del record["wall_time"]
    record["batches"] = {key: value for key, value in record["batches"].items() if key not in ("done", "computed")}
    return record


@pytest.fixture(scope="module")
def data():
    return make_toy(seed=21, signal_yield=0.0)


def test_fast_statistic_equals_the_mass_scan_on_toys(data):
    masses = lee.default_masses(data.edges)
    options = {"expected": _background(data.counts, data.edges).tolist(), "edges": data.edges.tolist(),
               "masses": masses.tolist(), "degree": 4, "resolution": 1.7, "levels": [0.5, 1.0, 1.5], "seed": 3}
    toys = lee.draw_toys(options["expected"], 3, 0, 3)
    fast = lee.local_significance(toys, data.edges, masses, degree=4)
    batch = lee.toy_batch(0, 3, options)
    assert not fast.full_method.any() and fast.errors == [None] * 3
    for i, counts in enumerate(toys):
        full = scan_masses(counts, data.edges, masses, degree=4)
        assert not full.failed
        z_full = np.array([point["significance"] for point in full.points])
        # Migrad stops within its EDM goal (2e-4 per fit); the Newton fits are within 2e-6 of the minimum.
        assert np.max(np.abs(fast.q0[i] - z_full**2)) < 2e-3
        assert batch["max_significance"][i] == pytest.approx(z_full.max(), abs=1e-3)
        assert batch["max_mass"][i] == full.best["mass"]
        for level in options["levels"]:
            assert batch["upcrossings"][str(level)][i] == lee.count_upcrossings(z_full, level)


def test_unverified_fits_take_the_mass_scan_path(data, monkeypatch):
    masses = COARSE[::5]
    monkeypatch.setattr(lee, "EDM_BOUND", -1.0)  # no Newton fit is accepted
    fast = lee.local_significance(data.counts, data.edges, masses, degree=4)
    assert fast.full_method.all()
    full = scan_masses(data.counts, data.edges, masses, degree=4)
    assert fast.q0[0] == pytest.approx([point["significance"] ** 2 for point in full.points], abs=1e-12)


def test_q0_at_a_fixed_mass_follows_the_asymptotic_distribution(data):
    toys = lee.draw_toys(_background(data.counts, data.edges), 11, 0, 2000)
    q0 = lee.local_significance(toys, data.edges, [125.0], degree=4).q0[:, 0]
    positive = q0[q0 > 0]
    # Half of the toys fit a negative yield (q0 = 0); the rest follow chi2 with one degree of freedom, so that the
    # local p0 = Phi(-sqrt(q0)) is uniform on (0, 1/2).
    assert scipy.stats.binomtest(positive.size, q0.size, 0.5).pvalue > 1e-3
    assert scipy.stats.kstest(positive, scipy.stats.chi2(1).cdf).pvalue > 1e-3
    p0 = scipy.stats.norm.sf(np.sqrt(positive))
    assert scipy.stats.kstest(2 * p0, "uniform").pvalue > 1e-3


@pytest.mark.slow
def test_toys_agree_with_gross_vitells():
    observed = make_toy(seed=109, signal_yield=250.0)  # a local excess of 3.06 sigma at 124.5 GeV
    result = lee.global_significance(observed.counts, observed.edges, degree=4, toys=2000, batch_size=100, seed=8)
    assert result.complete and result.observed["max_significance"] == pytest.approx(3.06, abs=0.01)
    assert result.batches["failed_toys"] == 0 and result.observed["fast_check"]["max_abs_q0_diff"] < 2e-3
    toys, (gv, gv_observed) = result.toys, result.gross_vitells
    assert gv.source == "toys" and gv.valid and gv_observed.source == "observed"
    assert abs(toys.p_value - gv.p_value) < 3 * np.hypot(toys.uncertainty, gv.uncertainty)
    assert toys.interval[0] < toys.p_value < toys.interval[1]
    # The estimate does not depend on the reference level (within the toys' precision).
    levels = [estimate.p_value for estimate in result.gross_vitells_levels]
    assert max(levels) - min(levels) < 2 * toys.uncertainty
    assert result.trials_factor == pytest.approx(toys.p_value / result.observed["p_local"])


def test_no_toy_above_a_strong_excess_gives_an_upper_bound():
    observed = make_toy(seed=21, signal_yield=600.0)
    result = lee.global_significance(observed.counts, observed.edges, COARSE, toys=100, seed=1)
    assert result.observed["max_significance"] > 5
    assert result.toys.exceeding == 0 and result.toys.p_value is None
    assert result.toys.upper_limit == pytest.approx(1 - 0.05 ** (1 / 100))
    assert "p_global < 0.0295 (95 % CL)" in result.toys.statement
    assert result.toys.significance == pytest.approx(scipy.stats.norm.isf(result.toys.upper_limit))
    estimate = lee.toy_p_value(3, 1000)
    assert estimate.p_value == 0.003 and estimate.uncertainty == pytest.approx(np.sqrt(0.003 * 0.997 / 1000))


def test_gross_vitells_formula():
    estimate = lee.gross_vitells(3.0, 2.5, 1.0, upcrossings_unc=0.1)
    factor = np.exp(-(9.0 - 1.0) / 2)
    assert estimate.p_value == pytest.approx(scipy.stats.norm.sf(3.0) + 2.5 * factor)
    assert estimate.uncertainty == pytest.approx(0.1 * factor)
    assert lee.gross_vitells(0.5, 3.0, 1.0).p_value == 1.0 and not lee.gross_vitells(0.5, 3.0, 1.0).valid
    assert list(lee.count_upcrossings(np.array([[0, 2, 0, 1, 2], [2, 2, 2, 0, 0.5]]), 1.0)) == [2, 0]


@pytest.mark.slow  # about 3 s on 2 cores
def test_killed_run_resumes_to_the_result_of_an_uninterrupted_one(data, tmp_path):
    out = tmp_path / "lee.json"
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"counts": data.counts.tolist(), "edges": data.edges.tolist(),
                                  "masses": COARSE.tolist()}))
    script = (
        "import json, os, signal\n"
        "from stats.lee import global_significance\n"
        f"data = json.load(open({str(inputs)!r}))\n"
        "def progress(done, total):\n"
        "    if done >= 150:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "global_significance(data['counts'], data['edges'], data['masses'], toys=400, batch_size=50, seed=5,\n"
        f"                    out={str(out)!r}, progress=progress)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    checkpoint = json.loads(out.read_text())
    assert sorted(checkpoint["batches"]) == ["0", "1", "2"] and checkpoint["result"] is None

    seen = []
    resumed = lee.global_significance(data.counts, data.edges, COARSE, toys=400, batch_size=50, out=out,
                                      progress=lambda done, total: seen.append(done))
    assert seen == [150, 200, 250, 300, 350, 400]
    assert resumed.batches["done"] == 3 and resumed.batches["computed"] == 5
    assert resumed.identity["settings"]["seed"] == 5  # taken from the checkpoint
    uninterrupted = lee.global_significance(data.counts, data.edges, COARSE, toys=400, batch_size=50, seed=5)
    assert _comparable(resumed) == _comparable(uninterrupted)
    assert json.loads(out.read_text())["result"]["toys"] == resumed.record()["toys"]

    more = lee.global_significance(data.counts, data.edges, COARSE, toys=500, batch_size=50, out=out)
    assert more.batches["done"] == 8 and more.batches["computed"] == 2 and more.toys.toys == 500


def test_a_checkpoint_of_other_inputs_is_refused(data, tmp_path):
    out = tmp_path / "lee.json"
    lee.global_significance(data.counts, data.edges, COARSE, toys=50, seed=1, out=out)
    with pytest.raises(IdentityMismatchError, match=r"differs in settings\.seed\)"):
        lee.global_significance(data.counts, data.edges, COARSE, toys=50, seed=2, out=out)
    other = make_toy(seed=22, signal_yield=0.0)
    with pytest.raises(IdentityMismatchError, match=r"differs in histogram_sha256\)"):
        lee.global_significance(other.counts, other.edges, COARSE, toys=50, seed=1, out=out)
    with pytest.raises(IdentityMismatchError, match=r"differs in masses, settings\.degree\)"):
        lee.global_significance(data.counts, data.edges, COARSE[1:], degree=3, toys=50, seed=1, out=out)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(IdentityMismatchError, match="not a look-elsewhere checkpoint"):
        lee.global_significance(data.counts, data.edges, COARSE, toys=50, out=tmp_path / "bad.json")
    scan = scan_masses(data.counts, data.edges, COARSE, degree=3)
    with pytest.raises(IdentityMismatchError, match=r"observed mass scan .* settings\.degree"):
        lee.global_significance(data.counts, data.edges, COARSE, toys=50, seed=1, observed=scan)


def test_bad_settings_are_refused(data):
    with pytest.raises(HistogramError, match="outside the histogram"):
        lee.global_significance(data.counts, data.edges, [110.0, 170.0], toys=10)
    with pytest.raises(StatsError, match="non-negative integer"):
        lee.global_significance(data.counts, data.edges, COARSE, toys=10, seed=-1)
    with pytest.raises(StatsError, match="reference level"):
        lee.global_significance(data.counts, data.edges, COARSE, toys=10, reference_level=2.0)
    assert lee.default_masses(data.edges)[[0, -1]].tolist() == [110.0, 159.5]  # 160 GeV is the upper edge


def test_batches_as_dask_tasks_equal_the_serial_run(data, dask_scheduler_address):
    from distributed import Client

    serial = lee.global_significance(data.counts, data.edges, COARSE, toys=100, batch_size=25, seed=9)
    with Client(dask_scheduler_address) as client:
        distributed = lee.global_significance(data.counts, data.edges, COARSE, toys=100, batch_size=25, seed=9,
                                              client=client)
    assert _comparable(distributed) == _comparable(serial)


@pytest.mark.slow
def test_many_toys_agree_with_gross_vitells_at_every_level():
    observed = make_toy(seed=103, signal_yield=350.0)  # 3.05 sigma at 124.5 GeV
    result = lee.global_significance(observed.counts, observed.edges, degree=4, toys=10000, batch_size=200, seed=4)
    toys = result.toys
    for estimate in result.gross_vitells_levels:
        assert abs(toys.p_value - estimate.p_value) < 3 * np.hypot(toys.uncertainty, estimate.uncertainty)

