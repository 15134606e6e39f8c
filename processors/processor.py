"""The coffea processor of the diphoton analysis: fills the m_yy spectrum and the cutflow."""

from __future__ import annotations

from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

from processors.lazy import is_lazy, process_lazy
from processors.selection import CUT_NAMES, PHOTON_BRANCHES, Cuts, select

MASS_LABEL = "$m_{\\gamma\\gamma}$ [GeV]"


def mass_histogram(*, bins: int = 60, start: float = 100.0, stop: float = 160.0) -> hist.Hist:
    """Return an empty m_yy histogram with a growing dataset axis (the project's contract)."""
    return hist.Hist(
        hist.axis.StrCategory([], name="dataset", growth=True),
        hist.axis.Regular(bins, start, stop, name="mass", label=MASS_LABEL),
        storage=hist.storage.Double(),
    )


def cutflow_histogram() -> hist.Hist:
    """Return an empty cutflow histogram: dataset x cut, cuts in selection order."""
    return hist.Hist(
        hist.axis.StrCategory([], name="dataset", growth=True),
        hist.axis.StrCategory(list(CUT_NAMES), name="cut"),
        storage=hist.storage.Double(),
    )


def dataset_name(events: ak.Array, default: str = "data") -> str:
    """The dataset of a chunk as coffea attaches it (``events.metadata["dataset"]``)."""
    metadata = getattr(events, "metadata", None)
    if isinstance(metadata, dict):
        return str(metadata.get("dataset", default))
    return default


class DiphotonProcessor(processor.ProcessorABC):
    """Select diphoton events and histogram their invariant mass.

    Args:
        cuts: selection thresholds.
        bins: number of m_yy bins.
        mass_range: (low, high) of the m_yy axis [GeV].
    """

    #: Branches ``process`` reads; the engine loads only these.
    columns = PHOTON_BRANCHES

    def __init__(
        self,
        *,
        cuts: Cuts = Cuts(),
        bins: int = 60,
        mass_range: tuple[float, float] = (100.0, 160.0),
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be positive, got {bins}")
        if not mass_range[0] < mass_range[1]:
            raise ValueError(f"mass_range must be increasing, got {mass_range}")
        self.cuts = Cuts(*cuts)
        self.bins = int(bins)
        self.mass_range = (float(mass_range[0]), float(mass_range[1]))

    def config(self) -> dict[str, Any]:
        """Plain keyword arguments that rebuild this processor (what Dask tasks receive)."""
        return {"cuts": tuple(self.cuts), "bins": self.bins, "mass_range": self.mass_range}

    def empty_output(self) -> dict[str, Any]:
        """The output of a chunk without events."""
        return {
            "mass": mass_histogram(bins=self.bins, start=self.mass_range[0], stop=self.mass_range[1]),
            "cutflow": cutflow_histogram(),
            "events": 0,
        }

    def process(self, events: ak.Array) -> dict[str, Any]:
        """Select the events of one chunk and fill fresh histograms.

        Args:
            events: events with the photon branches as fields and ``metadata["dataset"]``.

        Returns:
            {"mass": Hist, "cutflow": Hist, "events": number of input events}; on dask-awkward events
            (``coffea.dataset_tools.apply_to_fileset``) the same as ``hist.dask`` histograms and a dask scalar
            (:mod:`processors.lazy`).
        """
        if is_lazy(events):
            return process_lazy(self, events)
        dataset = dataset_name(events)
        selection = select(events, self.cuts)
        output = self.empty_output()
        output["mass"].fill(dataset=dataset, mass=selection.mass)
        output["cutflow"].fill(
            dataset=dataset,
            cut=list(CUT_NAMES),
            weight=np.array([selection.cutflow[name] for name in CUT_NAMES], dtype=np.float64),
        )
        output["events"] = len(events)
        return output

    def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        """Nothing to rescale: data carry no weights."""
        return accumulator

