"""Weighted histograms of simulated samples: the diphoton selection on the release's MC, normalised to the data's
luminosity, with the photon energy scale and resolution variations.

An event's weight is the release's (the ATLAS Open Data H->yy notebook's)::

    mcWeight * ScaleFactor_PILEUP * ScaleFactor_PHOTON * xsec * kfac * filteff * 1000 * lumi_fb / sum_of_weights

with ``xsec`` in pb and ``lumi_fb`` in fb^-1; every factor is a branch of the skim (``sum_of_weights`` of all
generated events, before the skim). :class:`SimulationProcessor` fills, per sample (the events' ``dataset``):

* ``mc_mass``: ``dataset`` x ``syst`` x ``mass``, ``Weight`` storage, with the ``syst`` categories of
  :data:`SYSTEMATICS`: ``nominal``; ``photon_scale_up``/``_down``: every photon's pT and E times 1 +- the energy
  scale (0.5 %); ``photon_resolution_up``: every photon's pT and E smeared by an extra relative Gaussian term
  (1 %, photons re-ordered by pT), from a normal number that depends only on (seed, dataset number, event number,
  photon index), so the same event is smeared the same way in any chunk; ``photon_resolution_down``: the
  up-variation mirrored about the nominal, ``2 x nominal - up`` (smearing can only widen a peak), filled event by
  event (an event in the same bin either way counts once with its weight, otherwise twice its weight where the
  nominal puts it and minus its weight where the up-variation does), so it too adds up chunk by chunk and its
  variance is the events'; a bin can be negative where more weight migrates into it than it holds;
* ``mc_cutflow``: ``dataset`` x ``cut``, ``Weight`` storage: the sum of the weights (and of their squares) of the
  events left after each cut, nominal.

The ``dataset`` axis is called so as on the data's histograms (``sample`` is a keyword of ``hist``'s fill). The
data's ``mass`` and ``cutflow`` are not filled by simulated events; events whose dataset is one of ``data`` are
processed as data (unweighted, as :class:`~processors.processor.DiphotonProcessor` does).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import hist
import numpy as np

from processors.processor import DiphotonProcessor, cutflow_histogram, dataset_name, mass_histogram
from processors.selection import CUT_NAMES, PHOTON_BRANCHES, Cuts, Selection, select

#: Branches of an event's weight (:func:`event_weights`).
WEIGHT_BRANCHES = ("mcWeight", "ScaleFactor_PILEUP", "ScaleFactor_PHOTON", "xsec", "kfac", "filteff", "sum_of_weights")
#: Branches that identify an event in a sample (the seed of its smearing).
EVENT_ID_BRANCHES = ("channelNumber", "eventNumber")
#: The ``syst`` categories of ``mc_mass``.
SYSTEMATICS = (
    "nominal",
    "photon_scale_up",
    "photon_scale_down",
    "photon_resolution_up",
    "photon_resolution_down",
)
#: Relative photon energy scale variation.
ENERGY_SCALE = 0.005
#: Relative Gaussian term added to the photon energy resolution in ``photon_resolution_up``.
RESOLUTION_TERM = 0.01
#: Default seed of the per-event smearing.
SMEARING_SEED = 20_250_213


def simulated_mass_histogram(*, bins: int = 60, start: float = 100.0, stop: float = 160.0) -> hist.Hist:
    """Return an empty weighted m_yy histogram: the data's axes (dataset, growing; mass) with syst between."""
    dataset, mass = mass_histogram(bins=bins, start=start, stop=stop).axes
    return hist.Hist(dataset, hist.axis.StrCategory(list(SYSTEMATICS), name="syst"), mass, storage=hist.storage.Weight())


def simulated_cutflow_histogram() -> hist.Hist:
    """Return an empty weighted cutflow: the data's axes (dataset, growing; cut, in selection order)."""
    return hist.Hist(*cutflow_histogram().axes, storage=hist.storage.Weight())


def event_weights(events: Any, lumi_fb: float) -> np.ndarray:
    """Each event's weight at ``lumi_fb`` fb^-1 (float64), from the branches of :data:`WEIGHT_BRANCHES`."""
    def column(name: str) -> np.ndarray:
        return np.asarray(events[name], dtype=np.float64)

    return (
        column("mcWeight") * column("ScaleFactor_PILEUP") * column("ScaleFactor_PHOTON")
        * column("xsec") * column("kfac") * column("filteff") * (1000.0 * lumi_fb) / column("sum_of_weights")
    )


# 2^64 / golden ratio, and twice it (mod 2^64): the increments of splitmix64's counter.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_2 = np.uint64(0x3C6EF372FE94F82A)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent for neighbouring inputs."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _uniform(values: np.ndarray) -> np.ndarray:
    """uint64 to uniform numbers in (0, 1)."""
    return ((values >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def photon_gaussians(
    dataset_numbers: np.ndarray, event_numbers: np.ndarray, counts: np.ndarray, seed: int
) -> np.ndarray:
    """One standard normal number per photon (flat, in event order) that depends only on ``seed``, the event's
    dataset and event numbers and the photon's index in the event: the same in any chunk, on any machine."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    event = np.repeat(np.arange(len(counts)), counts)
    index = (np.arange(int(counts.sum())) - starts[event]).astype(np.uint64)
    keys = _mix(np.full(len(counts), seed, dtype=np.uint64) ^ np.asarray(dataset_numbers, dtype=np.uint64))
    keys = _mix(keys ^ np.asarray(event_numbers, dtype=np.uint64))[event] + index * _GOLDEN_2
    first, second = _uniform(_mix(keys + _GOLDEN)), _uniform(_mix(keys + _GOLDEN_2))
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)


def _photons(events: Any) -> dict[str, ak.Array]:
    return {name: events[name] for name in PHOTON_BRANCHES}


def _scaled(events: Any, factor: float) -> dict[str, ak.Array]:
    """The photon columns with every photon's pT and E times ``factor``."""
    photons = _photons(events)
    for name in ("photon_pt", "photon_e"):
        photons[name] = photons[name] * factor
    return photons


def _smeared(events: Any, term: float, seed: int) -> dict[str, ak.Array]:
    """The photon columns with every photon's pT and E times 1 + ``term`` x its normal number, re-ordered by pT."""
    photons = _photons(events)
    counts = ak.to_numpy(ak.num(photons["photon_pt"]))
    normal = photon_gaussians(events["channelNumber"], events["eventNumber"], counts, seed)
    factors = ak.unflatten(1.0 + term * normal, counts)
    for name in ("photon_pt", "photon_e"):
        photons[name] = photons[name] * factors
    order = ak.argsort(photons["photon_pt"], axis=1, ascending=False, stable=True)
    return {name: values[order] for name, values in photons.items()}


def _fill_mirrored(histogram: hist.Hist, dataset: str, nominal: Selection, up: Selection, weights: np.ndarray) -> None:
    """Fill ``photon_resolution_down`` with ``2 x nominal - up``, event by event (see the module's docstring)."""
    _, in_nominal, in_up = np.intersect1d(nominal.events, up.events, assume_unique=True, return_indices=True)
    axis = histogram.axes["mass"]
    same = np.asarray(axis.index(nominal.mass[in_nominal])) == np.asarray(axis.index(up.mass[in_up]))
    once = np.zeros(len(nominal.events), dtype=bool)
    once[in_nominal[same]] = True
    moved = np.ones(len(up.events), dtype=bool)
    moved[in_up[same]] = False
    nominal_weights = weights[nominal.events]
    histogram.fill(
        dataset=dataset,
        syst="photon_resolution_down",
        mass=np.concatenate([nominal.mass, up.mass[moved]]),
        weight=np.concatenate([np.where(once, 1.0, 2.0) * nominal_weights, -weights[up.events][moved]]),
    )


class SimulationProcessor(DiphotonProcessor):
    """The diphoton selection on simulated samples: weighted histograms per sample, normalised to ``lumi_fb``.

    Args:
        lumi_fb: the data's luminosity in fb^-1, which every sample is normalised to. A run over a fraction of
            a sample's events gives that fraction of its yield, as the same fraction of the data holds that
            fraction of the luminosity: give the data's whole luminosity.
        cuts, bins, mass_range: as for :class:`~processors.processor.DiphotonProcessor`.
        energy_scale: relative photon energy scale variation (``photon_scale_up``/``_down``).
        resolution_term: relative Gaussian term added to the resolution (``photon_resolution_up``).
        seed: seed of the per-event smearing.
        data: datasets processed as data (unweighted ``mass`` and ``cutflow``, no simulated histograms).
    """

    #: Branches ``process`` reads; the engine loads only these.
    columns = PHOTON_BRANCHES + WEIGHT_BRANCHES + EVENT_ID_BRANCHES

    def __init__(
        self,
        *,
        lumi_fb: float,
        cuts: Cuts = Cuts(),
        bins: int = 60,
        mass_range: tuple[float, float] = (100.0, 160.0),
        energy_scale: float = ENERGY_SCALE,
        resolution_term: float = RESOLUTION_TERM,
        seed: int = SMEARING_SEED,
        data: tuple[str, ...] = ("data",),
    ) -> None:
        super().__init__(cuts=cuts, bins=bins, mass_range=mass_range)
        if not lumi_fb > 0:
            raise ValueError(f"lumi_fb must be positive, got {lumi_fb}")
        if not (0 <= energy_scale < 1 and 0 <= resolution_term < 1):
            raise ValueError(
                f"energy_scale and resolution_term must be in [0, 1), got {energy_scale} and {resolution_term}"
            )
        self.lumi_fb = float(lumi_fb)
        self.energy_scale = float(energy_scale)
        self.resolution_term = float(resolution_term)
        self.seed = int(seed)
        self.data = tuple(data)

    def config(self) -> dict[str, Any]:
        """Plain keyword arguments that rebuild this processor (what Dask tasks receive)."""
        return {
            **super().config(), "lumi_fb": self.lumi_fb, "energy_scale": self.energy_scale,
            "resolution_term": self.resolution_term, "seed": self.seed, "data": self.data,
        }

    def empty_output(self) -> dict[str, Any]:
        """The output of a chunk without events: the data's histograms and the simulated ones."""
        return {
            **super().empty_output(),
            "mc_mass": simulated_mass_histogram(bins=self.bins, start=self.mass_range[0], stop=self.mass_range[1]),
            "mc_cutflow": simulated_cutflow_histogram(),
        }

    def process(self, events: ak.Array) -> dict[str, Any]:
        """Select the events of one chunk of a simulated sample and fill fresh weighted histograms.

        Args:
            events: events with the branches of :attr:`columns` as fields and ``metadata["dataset"]``.

        Returns:
            {"mass", "cutflow": empty (data only), "mc_mass", "mc_cutflow": Hist, "events": input events}.
        """
        dataset = dataset_name(events)
        if dataset in self.data:
            return super().process(events)
        weights = event_weights(events, self.lumi_fb)
        nominal = select(events, self.cuts, weights=np.stack([weights, weights * weights], axis=1))
        output = self.empty_output()
        masses = output["mc_mass"]
        masses.fill(dataset=dataset, syst="nominal", mass=nominal.mass, weight=weights[nominal.events])
        for syst, sign in (("photon_scale_up", 1.0), ("photon_scale_down", -1.0)):
            varied = select(_scaled(events, 1.0 + sign * self.energy_scale), self.cuts)
            masses.fill(dataset=dataset, syst=syst, mass=varied.mass, weight=weights[varied.events])
        up = select(_smeared(events, self.resolution_term, self.seed), self.cuts)
        masses.fill(dataset=dataset, syst="photon_resolution_up", mass=up.mass, weight=weights[up.events])
        _fill_mirrored(masses, dataset, nominal, up, weights)

        cutflow = output["mc_cutflow"]
        cutflow.fill(dataset=dataset, cut=list(CUT_NAMES), weight=np.zeros(len(CUT_NAMES)))  # the category
        sums = np.array([nominal.weighted_cutflow[name] for name in CUT_NAMES])
        view = cutflow.view()
        row = cutflow.axes["dataset"].index(dataset)
        view.value[row, :], view.variance[row, :] = sums[:, 0], sums[:, 1]
        output["events"] = len(events)
        return output
