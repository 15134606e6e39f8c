"""The tutorial runs as its notebook (nbclient) and as its blocks pasted into a script, and the notebook is the
page's (so neither can rot)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"
NOTEBOOK = DOCS / "tutorial.ipynb"
SHARED = ROOT.parent / "shared" / "data"
#: The CLs_obs the original notebook printed (the tutorial quotes them).
NOTEBOOK_CLS = {"C1N2_Wh_hbb_650_0": 0.017138, "C1N2_Wh_hbb_1000_0": 0.58568}


def builder():
    spec = importlib.util.spec_from_file_location("build_notebook", DOCS / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(text: str) -> list[str]:
    """The fenced python blocks, found here independently of the builder."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_committed_notebook_is_the_pages():
    text = TUTORIAL.read_text()
    assert NOTEBOOK.read_text() == builder().render(text), "run: python docs/build_notebook.py"
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert code == [block.rstrip("\n") for block in code_blocks(text)] and len(code) >= 9
    assert all(cell["outputs"] == [] for cell in cells if cell["cell_type"] == "code")  # committed unexecuted
    prose = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    assert "Why `if __name__ == \"__main__\":`" in prose


def test_the_check_fails_on_a_stale_notebook(tmp_path, monkeypatch, capsys):
    build = builder()
    monkeypatch.setattr(build, "NOTEBOOK", tmp_path / "tutorial.ipynb")
    assert build.main(["--check"]) == 1  # missing
    assert build.main([]) == 0 and build.main(["--check"]) == 0
    (tmp_path / "tutorial.ipynb").write_text((tmp_path / "tutorial.ipynb").read_text().replace("SCALE", "SCALE2"))
    assert build.main(["--check"]) == 1
    assert "run python docs/build_notebook.py" in capsys.readouterr().err


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'")


def test_every_blocks_work_is_under_the_main_guard():
    """Pasted into a script, only imports run outside the guard, so spawned workers importing it run nothing."""
    for number, block in enumerate(code_blocks(TUTORIAL.read_text()), start=1):
        body = ast.parse(block).body
        outside = [ast.unparse(node) for node in body
                   if not isinstance(node, (ast.Import, ast.ImportFrom)) and not _is_main_guard(node)]
        assert outside == [], f"block {number} runs outside `if __name__ == \"__main__\":`: {outside}"
        assert sum(map(_is_main_guard, body)) == 1, f"block {number} has no work under the guard"


def tutorial_env(work: Path) -> dict[str, str]:
    if not (SHARED / "1Lbb-likelihoods.tar.gz").is_file():
        pytest.skip(f"the 1Lbb likelihoods are not in {SHARED}")
    return {"TUTORIAL_SCALE": "0.03", "TUTORIAL_DIR": str(work), "TUTORIAL_SHARED": str(SHARED), "MPLBACKEND": "Agg"}


def check_output(printed: str, work: Path) -> None:
    """What the tutorial printed, against the generated truth, the notebook's numbers and the files it wrote."""
    truth = json.loads((work / "data" / "truth.json").read_text())
    assert f"16 files, {truth['events_written']} events; injected m_H = {truth['signal_mass']} GeV" in printed
    # The 140 GeV check sees no signal at this small scale.
    check = re.search(r"^at 140 GeV: (\S+) sigma$", printed, flags=re.M)
    assert check and abs(float(check.group(1))) < 3
    cls = dict(re.findall(r"^(C1N2_Wh_hbb_\w+): CLs_obs = (\S+) \(notebook", printed, flags=re.M))
    assert set(cls) == set(NOTEBOOK_CLS)
    # (1000, 0): the notebook's number; (650, 0): the lower conditional minimum the text describes, and its CLs.
    assert abs(float(cls["C1N2_Wh_hbb_1000_0"]) - NOTEBOOK_CLS["C1N2_Wh_hbb_1000_0"]) < 1e-4
    assert "  conditional fit: -2lnL 220.1296, JES_EffectiveNP_Modelling1 -0.46; pyhf's default fit stopped at " \
           "220.1422" in printed
    assert abs(float(cls["C1N2_Wh_hbb_650_0"]) - 0.017250) < 1e-6
    assert re.search(r"^125 patches, 0 failed, ", printed, flags=re.M)
    assert (work / "1Lbb_exclusion.png").is_file()
    assert len(json.loads((work / "1Lbb_cls.json").read_text())["results"]) == 125


@pytest.mark.slow
def test_the_blocks_pasted_into_a_script_run(tmp_path):
    """``python tutorial.py`` with every block, in order: Dask's spawned workers import it as ``__mp_main__``."""
    work = tmp_path / "work"
    env = {**os.environ, **tutorial_env(work)}
    script = tmp_path / "tutorial.py"
    script.write_text("\n\n".join(code_blocks(TUTORIAL.read_text())))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    check_output(done.stdout, work)


@pytest.mark.slow
def test_the_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    work = tmp_path / "work"
    for name, value in tutorial_env(work).items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    book = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(book, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(output.get("text", "") for cell in book.cells if cell.cell_type == "code"
                      for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")
    check_output(printed, work)
