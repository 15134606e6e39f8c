"""Mass scans: the robust profile likelihood against an independent implementation, toy truth, the tutorial
method's failures, bad grids, and the Dask scan against the serial one."""

import importlib.metadata

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
from _toys import CENTRES, EDGES, make_toy

from stats.errors import HistogramError, StatsError
from stats.mass_scan import mass_grid, scan_masses

INJECTED = 125.0


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=21, signal_yield=900.0, mass=INJECTED)


@pytest.fixture(scope="module")
def serial_scan(toy):
    return scan_masses(toy.counts, toy.edges, np.linspace(110.0, 140.0, 25))


def _reference_q0(counts, mass, *, degree=4, resolution=1.7):
    """q0 from scratch: power series in (x - 130) / 30, BFGS on the Poisson NLL, with and without the peak."""
    x = (CENTRES - 130.0) / 30.0
    basis = np.vander(x, degree + 1, increasing=True)
    peak = np.diff(scipy.special.ndtr((EDGES - mass) / resolution))

    def minimum(design):
        start = np.linalg.lstsq(design, counts, rcond=None)[0]

        def nll(p):
            lam = design @ p
            return np.inf if np.any(lam <= 0) else float(np.sum(lam - counts * np.log(lam)))

        def grad(p):
            return design.T @ (1.0 - counts / (design @ p))

        result = scipy.optimize.minimize(nll, start, jac=grad, method="BFGS", options={"gtol": 1e-8})
        return result.fun, result.x

    nll_b, _ = minimum(basis)
    nll_sb, params = minimum(np.column_stack([basis, peak]))
    return (2.0 * (nll_b - nll_sb) if params[-1] > 0 else 0.0), params[-1]


def test_robust_scan_matches_an_independent_profile_likelihood(toy, serial_scan):
    assert not serial_scan.failed
    for point in serial_scan.points[::4]:
        q0, signal_yield = _reference_q0(toy.counts, point["mass"])
        assert point["significance"] == pytest.approx(np.sqrt(q0), abs=2e-3)
        assert point["signal_yield"] == pytest.approx(signal_yield, abs=5.0)  # Migrad EDM tolerance: ~0.03 sigma
        assert point["p0"] == pytest.approx(scipy.stats.norm.sf(point["significance"]), rel=1e-9)


def test_peak_is_at_the_injected_mass_with_the_expected_significance(toy, serial_scan):
    best = serial_scan.best
    assert abs(best["mass"] - INJECTED) <= 1.25
    # Asimov expectation of the same test: the truth (continuum + peak) as data.
    q0_asimov, _ = _reference_q0(toy.background + toy.signal, INJECTED)
    assert abs(best["significance"] - np.sqrt(q0_asimov)) < 2.0
    assert abs(best["signal_yield"] - toy.signal_yield) < 3 * 130.0


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_background_only_toys_show_nothing_above_three_sigma(seed):
    toy = make_toy(seed=seed, signal_yield=0.0)
    scan = scan_masses(toy.counts, toy.edges)
    assert len(scan.points) == 25 and not scan.failed
    assert max(point["significance"] for point in scan.points) < 3.0
    # Local p0 values of a null scan are spread out, not pinned at one value.
    assert len({round(point["p0"], 6) for point in scan.points}) > 5


@pytest.mark.slow
def test_tutorial_method_fails_where_the_robust_one_does_not():
    toy = make_toy(seed=1, signal_yield=1800.0)
    masses = [115.0, 125.0]
    tutorial = scan_masses(toy.counts, toy.edges, masses, method="tutorial")
    robust = scan_masses(toy.counts, toy.edges, masses, method="robust")
    assert [p["mass"] for p in tutorial.points] == masses
    (failed,) = tutorial.failed
    assert failed["mass"] == 115.0 and failed["significance"] is None
    assert "no parameter uncertainties" in failed["error"]
    assert tutorial.points[1]["status"] == "ok" and tutorial.points[1]["significance"] > 10
    assert not robust.failed and robust.points[1]["significance"] > 10


def test_bad_grids_are_rejected(toy):
    with pytest.raises(HistogramError, match="outside the histogram range"):
        scan_masses(toy.counts, toy.edges, [95.0, 125.0])
    with pytest.raises(StatsError, match="empty"):
        scan_masses(toy.counts, toy.edges, [])
    with pytest.raises(StatsError, match="unknown scan method"):
        scan_masses(toy.counts, toy.edges, [125.0], method="magic")
    with pytest.raises(HistogramError, match="empty"):
        scan_masses(np.zeros(60), toy.edges, [125.0])
    with pytest.raises(StatsError, match="bad mass grid"):
        mass_grid("110:140")
    np.testing.assert_allclose(mass_grid("110:140:601")[[0, 1, -1]], [110.0, 110.05, 140.0])
    np.testing.assert_allclose(mass_grid("120,125.5"), [120.0, 125.5])


def test_dask_scan_equals_the_serial_scan(toy, serial_scan, client):
    distributed = scan_masses(toy.counts, toy.edges, np.linspace(110.0, 140.0, 25), client=client)
    assert distributed.points == serial_scan.points


def test_the_scan_records_the_identity_of_its_inputs(toy, serial_scan):
    identity = serial_scan.identity
    assert identity["masses"] == [point["mass"] for point in serial_scan.points]
    assert identity["settings"] == {"method": "robust", "degree": 4, "reference_yield": 1.0, "resolution": 1.7}
    assert identity["version"] == importlib.metadata.version("opendata-stats")
    # Another histogram (one event moved), degree or grid is another identity; the same inputs the same one.
    moved = toy.counts.copy()
    moved[10] += 1
    grid = np.linspace(110.0, 140.0, 25)
    assert scan_masses(toy.counts, toy.edges, grid).identity == identity
    assert scan_masses(moved, toy.edges, grid).identity["histogram_sha256"] != identity["histogram_sha256"]
    assert scan_masses(toy.counts, toy.edges, grid, degree=5).identity != identity
    assert scan_masses(toy.counts, toy.edges, grid[:3]).identity != identity
