"""The tutorial's code blocks run, in order, in one namespace (so the document cannot rot)."""

import pathlib
import re

import pytest

TUTORIAL = pathlib.Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.slow
def test_tutorial_runs(tmp_path, monkeypatch):
    if not (SHARED / "1Lbb-likelihoods.tar.gz").is_file():
        pytest.skip(f"the 1Lbb likelihoods are not in {SHARED}")
    blocks = code_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 8
    monkeypatch.setenv("TUTORIAL_SCALE", "0.03")
    monkeypatch.setenv("TUTORIAL_DIR", str(tmp_path))
    monkeypatch.setenv("TUTORIAL_SHARED", str(SHARED))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "tutorial"}
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"{TUTORIAL.name}, block {number}", "exec"), namespace)
        except pytest.skip.Exception:
            raise
        except Exception as err:  # pragma: no cover - the message names the failing block
            raise AssertionError(f"tutorial block {number} failed: {type(err).__name__}: {err}") from err
    # The 140 GeV check sees no signal, and the scan sees no spurious excess at this small scale either.
    assert abs(namespace["check"]["significance"]) < 3
    assert (tmp_path / "1Lbb_exclusion.png").is_file()
