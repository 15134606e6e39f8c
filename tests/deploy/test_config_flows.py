"""A config file reaches the processor: its cuts and binning give what the processor gives when built by hand."""

import json

import numpy as np
from click.testing import CliRunner

from deploy.cli import cli
from processors.engine import process_files
from processors.generate import generate_dataset
from processors.processor import DiphotonProcessor
from processors.selection import Cuts


def test_process_takes_cuts_and_binning_from_the_config(tmp_path):
    data = generate_dataset(tmp_path / "data", events=20_000, seed=5, periods=["data16_periodA", "data16_periodB"],
                            basket_entries=2_000)
    config = tmp_path / "analysis.yaml"
    config.write_text("selection:\n  lead_photon_pt: 70\n  crack_eta: [1.3, 1.6]\nhistogram:\n  bins: 30\n"
                      "processing:\n  chunksize: 5000\n")
    out = tmp_path / "out"
    done = CliRunner().invoke(cli, ["process", "--config", str(config), "--metadata", str(data.metadata_path),
                                    "--workers", "0", "--no-progress", "--out", str(out)])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "summary.json").read_text())

    by_hand = process_files([str(f) for f in data.files], progress=False, chunksize=5_000,
                            processor=DiphotonProcessor(cuts=Cuts(lead_pt=70.0, crack=(1.3, 1.6)), bins=30))
    expected = by_hand.histograms["mass"].project("mass")
    assert len(summary["mass"]["counts"]) == 30
    np.testing.assert_array_equal(summary["mass"]["counts"], expected.values())
    assert summary["chunks"] == by_hand.chunks > len(data.files)  # 5000-entry chunks, not the default
    default = process_files([str(f) for f in data.files], processor=DiphotonProcessor(), progress=False)
    assert sum(summary["mass"]["counts"]) < default.histograms["mass"].sum()  # the harder cuts select fewer
