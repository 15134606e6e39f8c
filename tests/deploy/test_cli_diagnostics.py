"""``opendata-stats diagnostics``: a workspace file in, diagnostics.json and figures out; bad input one error line."""

from __future__ import annotations

import json

import pyhf
import pytest

from deploy.cli import main
from tests.stats.test_diagnostics import small_spec


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as done:
        return int(done.code)
    return 0


@pytest.mark.slow
def test_workspace_file_gives_the_verified_fit_and_top_impacts(tmp_path):
    pyhf.set_backend("numpy")
    source = tmp_path / "workspace.json"
    source.write_text(json.dumps(small_spec()))
    assert run(["diagnostics", str(source), "--top", "1", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    names = [p["name"] for p in record["parameters"]]
    assert set(names) == {"mu", "lumi", "jes", "xsec", "mcstat[0]", "mcstat[1]", "mcstat[2]"}
    assert len(record["ranking"]) == 1 and record["ranking"][0]["postfit_up"]["edm"] < 1e-3
    assert record["identity"]["inputs"]["sha256"] and record["edm"] < 1e-3
    assert {path.rsplit("/", 1)[1] for path in record["figures"]} == {"pulls.pdf", "correlation_matrix.pdf",
                                                                       "ranking.pdf"}


@pytest.mark.parametrize("kind", ["invalid workspace", "likelihoods without --patch"])
def test_bad_inputs_are_one_error_line(tmp_path, capsys, kind):
    if kind == "invalid workspace":
        source = tmp_path / "bad.json"
        source.write_text('{"channels": []}')
        expected = "not a valid pyhf workspace"
    else:
        source = tmp_path / "likelihoods"
        source.mkdir()
        expected = "--patch"
    assert run(["diagnostics", str(source), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
