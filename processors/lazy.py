"""The diphoton processor on dask-awkward events (``coffea.dataset_tools.apply_to_fileset``), with ``hist.dask``.

The selection (:func:`processors.selection.select`) reads the layouts' offsets and contents as numpy arrays, so it
needs concrete arrays: ``ak.to_layout`` has no overload for a lazy ``dask_awkward.Array``. Here it runs once per
partition (``dask_awkward.map_partitions``), on the concrete arrays of that partition, and returns one record
per partition: the selected masses and the cutflow counts. The histograms are ``hist.dask`` histograms filled
from those records, so ``dask.compute`` gives the same ``hist.Hist`` objects as the eager processor.

dask-awkward learns which branches to read by running the graph on typetracers (arrays without data); the
partition function then touches exactly the branches :func:`~processors.selection.select` reads and returns a
typetracer of its output's form, so only those branches are read.

Needs ``dask-awkward`` and ``dask-histogram`` (the ``coffea-dask`` extra); nothing here is imported by the
eager path.
"""

from __future__ import annotations

import copy
from typing import Any

import awkward as ak
import numpy as np

from processors.selection import CUT_NAMES, PHOTON_BRANCHES, Cuts, select

#: Name of the per-partition selection in the task graph.
SELECTION_LABEL = "diphoton-selection"


def is_lazy(events: Any) -> bool:
    """Whether ``events`` is a dask collection (dask-awkward events from ``apply_to_fileset``)."""
    from dask.base import is_dask_collection

    return is_dask_collection(events)


def _partition_record(mass: np.ndarray, cutflow: np.ndarray) -> ak.contents.RecordArray:
    """One record: ``mass`` (var * float64, the selected masses), ``cutflow`` (counts, one per cut)."""
    offsets = ak.index.Index64(np.array([0, len(mass)], dtype=np.int64))
    return ak.contents.RecordArray(
        [
            ak.contents.ListOffsetArray(offsets, ak.contents.NumpyArray(np.asarray(mass, dtype=np.float64))),
            ak.contents.RegularArray(
                ak.contents.NumpyArray(np.asarray(cutflow, dtype=np.int64)), len(CUT_NAMES), zeros_length=1
            ),
        ],
        ["mass", "cutflow"],
    )


def select_partition(events: ak.Array, cuts: tuple = tuple(Cuts())) -> ak.Array:
    """The selection of one partition as one record (see :func:`_partition_record`).

    On typetracer input (dask-awkward's column optimisation and meta inference) it touches the branches the
    selection reads and returns a typetracer of the output form.
    """
    if ak.backend(events) == "typetracer":
        for name in PHOTON_BRANCHES:
            ak.typetracer.touch_data(events[name])
        empty = _partition_record(np.empty(0), np.zeros(len(CUT_NAMES), dtype=np.int64))
        return ak.Array(empty.to_typetracer(forget_length=True))
    selection = select(events, Cuts(*cuts))
    counts = np.array([selection.cutflow[name] for name in CUT_NAMES], dtype=np.int64)
    return ak.Array(_partition_record(selection.mass, counts))


def process_lazy(processor: Any, events: Any) -> dict[str, Any]:
    """``DiphotonProcessor.process`` on dask-awkward events: the same keys, as ``hist.dask`` histograms.

    Args:
        processor: the :class:`~processors.processor.DiphotonProcessor` (its cuts and axes).
        events: dask-awkward events with the photon branches as fields and ``metadata["dataset"]``.

    Returns:
        {"mass": hist.dask.Hist, "cutflow": hist.dask.Hist, "events": dask-awkward scalar}; ``dask.compute``
        turns them into what ``process`` returns on the same events.
    """
    import dask_awkward as dak
    import hist.dask

    from processors.processor import dataset_name

    dataset = dataset_name(events)
    selected = dak.map_partitions(select_partition, events, cuts=tuple(processor.cuts), label=SELECTION_LABEL)
    # The same axes as the eager output's (copies: a growing axis belongs to one histogram).
    empty = processor.empty_output()
    mass = hist.dask.Hist(*copy.deepcopy(list(empty["mass"].axes)), storage=empty["mass"].storage_type())
    cutflow = hist.dask.Hist(*copy.deepcopy(list(empty["cutflow"].axes)), storage=empty["cutflow"].storage_type())
    mass.fill(dataset=dataset, mass=dak.flatten(selected.mass))
    for index, name in enumerate(CUT_NAMES):
        cutflow.fill(dataset=dataset, cut=name, weight=selected.cutflow[:, index])
    return {"mass": mass, "cutflow": cutflow, "events": dak.num(events, axis=0)}
