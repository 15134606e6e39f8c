"""Upper limits of many patches as Dask tasks (stats.limit_scan): the same limits as in-process searches and as
pyhf's upper_limit, hypotests past the time limit, resume and its refusal of other inputs."""

from __future__ import annotations

import json
import time

import pyhf
import pytest

from stats.errors import WorkspaceError
from stats.likelihoods import HypotestSettings, patched_model
from stats.limit_scan import scan_limits
from stats.limits import limits_from_dict, pyhf_upper_limits
from tests.stats.test_patchscan import toy  # noqa: F401 - the fixture: toy likelihoods


def hang_target(bkg_only, settings, shared):
    """The limits' compute function, except that the hypotest at mu = 1 (the search's first) never finishes."""
    from stats.limit_scan import limit_target

    compute = limit_target(bkg_only, settings, shared)

    def hanging(request):
        if request["mu"] == 1.0:
            time.sleep(3600)
        return compute(request)

    return hanging


def in_process(toy, patch):
    pyhf.set_backend("numpy")
    model, data = patched_model(toy.bkg_only, {"metadata": patch.metadata, "patch": patch.patch}, HypotestSettings())
    return model, data


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_toy_limits_as_tasks_match_in_process_and_pyhf(toy, client, tmp_path, backend):
    if backend == "jax":
        pytest.importorskip("jax")
    out = tmp_path / "limits.json"
    seen = []
    result = scan_limits(toy, client, settings=HypotestSettings(backend=backend), out=out, progress=seen.append)
    assert [r.status for r in result.results] == ["ok"] * 3 and len(seen) == 3
    for row, patch in zip(result.results, toy.patchset.patches):
        model, data = in_process(toy, patch)
        search = limits_from_dict(row.limits)
        assert {p.method for p in search.points} == {"compact" if backend == "jax" else "pyhf"}
        if backend == "numpy":  # the same hypotests in the same order: the same numbers
            want = pyhf_upper_limits(model, data).values
            assert [v is None for v in search.values] == [v is None for v in want]
            assert all(abs(a - b) <= 1e-6 * b for a, b in zip(search.values, want) if a is not None)
        if row.name == "sig_500_100":  # a weak signal: most limits lie above the POI's upper bound, 10
            assert [limit.status for limit in search.limits] == ["not_bracketed", "ok", "ok", *["not_bracketed"] * 3]
            assert all("upper bound 10" in limit.reason for limit in search.limits if limit.status != "ok")
            continue  # (pyhf's upper_limit searches on past the bound, and its fit refuses a start there)
        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, test_stat="qtilde", rtol=1e-6)
        for value, want in zip([row.observed, *row.expected], [obs, *exp]):
            assert abs(value - float(want)) <= 1e-3 * float(want), (row.name, value, float(want))
    written = json.loads(out.read_text())
    assert [r["name"] for r in written["results"]] == ["sig_300_100", "sig_400_100", "sig_500_100"]
    assert written["identity"]["limits"]["level"] == 0.05 and "mu" not in written["identity"]["settings"]
    # A rerun reuses every patch (no task, no progress); other search options are refused, the file kept.
    again = []
    rerun = scan_limits(toy, client, settings=HypotestSettings(backend=backend), out=out, progress=again.append)
    assert again == [] and [r.observed for r in rerun.results] == [r.observed for r in result.results]
    before = out.read_text()
    with pytest.raises(WorkspaceError, match="limits of other inputs.*rtol"):
        scan_limits(toy, client, settings=HypotestSettings(backend=backend), out=out, rtol=1e-3)
    assert out.read_text() == before


@pytest.mark.slow
def test_a_hung_hypotest_is_a_failed_point_and_the_search_goes_on(toy, client):
    patch = toy.patchset.patches[1]
    result = scan_limits(toy, client, patches=[patch], settings=HypotestSettings(backend="numpy"), timeout=5,
                         target="tests.stats.test_limit_scan:hang_target")
    [row] = result.results
    search = limits_from_dict(row.limits)
    assert [(p.mu, p.error) for p in search.failed] == [(1.0, "timeout after 5s")]
    assert row.status == "ok" and row.hypotests == len(search.points) + 1
    model, data = in_process(toy, patch)
    assert row.observed == pytest.approx(pyhf_upper_limits(model, data).observed.value, rel=1e-3)


def test_poi_bounds_read_once_where_the_measurement_sets_them(toy):
    from stats.limit_scan import measured_poi_bounds
    from tests.stats.test_hepdata import SIGNALS, small_bkg_only, small_patchset

    spec = {"metadata": dict(toy.patchset.patches[0].metadata), "patch": list(toy.patchset.patches[0].patch)}
    assert measured_poi_bounds(toy, spec) is None  # pyhf's default for the POI's modifier: read per patch
    bkg = small_bkg_only()
    bkg["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[0.0, 3.0]]}]
    patch = small_patchset(bkg, SIGNALS)["patches"][0]
    bounded = toy._replace(bkg_only=bkg)
    assert measured_poi_bounds(bounded, patch) == (0.0, 3.0)


@pytest.mark.slow
def test_cli_limits_writes_each_patchs_limits_and_the_map(toy, tmp_path, capsys):
    """`opendata-stats limits`: the limits pyhf's upper_limit gives, one line per patch, the limit map of the 2D
    grid, exit 0; the weak signal's limits beyond the POI's bound are named, not invented."""
    pytest.importorskip("jax")
    from deploy.cli import main

    out = tmp_path / "limits.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["limits", toy.source, "--workers", "1", "--backend", "jax", "--out", str(out)])
        raise SystemExit(0)
    assert exit_info.value.code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "3/3 patches with limits" in printed
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    patch = toy.patchset["sig_300_100"]
    model, data = in_process(toy, patch)
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, test_stat="qtilde", rtol=1e-6)
    row = rows["sig_300_100"]
    for value, want in zip([row["observed"], *row["expected"]], [obs, *exp]):
        assert abs(value - float(want)) <= 1e-3 * float(want)
    assert f"sig_300_100: mu_up observed {row['observed']:.4g}" in printed
    assert "sig_500_100: mu_up observed none" in printed  # above the POI's upper bound (see the test above)
    # Two observed limits: too few for a map, which the command says instead of failing.
    assert "no plot: a limit map needs a 2D scan with at least 3 observed limits, got 2" in printed
