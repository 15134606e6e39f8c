"""CLs for many patches of one background-only workspace: one compiled likelihood for them all, pyhf as fallback.

The engine builds each patch's likelihood as a compact model (:mod:`stats.compact.model`, from the patched
specification, without a pyhf model) padded to the patchset's shared structure (:mod:`stats.compact.padding`), and
runs the hypotest's verified fits (:mod:`stats.compact.hypotest`) as jax programs compiled once per structure. Two
checks guard the compact likelihood: per structure, it must equal pyhf's model of the same (padded) specification
(:func:`~stats.compact.model.verify`); per patch, the padding must have no effect. Anything the compact path does
not take (:class:`~stats.compact.Unsupported`: a feature it does not implement, a failed check, a fit it cannot
verify) is computed by pyhf with the same verification (:func:`stats.hypotest.pyhf_hypotest`), and the result
names the method and the reason.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NamedTuple

import jsonpatch
import jsonpointer
import pyhf

from stats.compact import Unsupported
from stats.compact import hypotest as compact_hypotest
from stats.compact import minimise
from stats.compact import model as compact_model
from stats.compact.padding import canonical_patch, modifier_index, padding_problem, shallow_apply
from stats.hypotest import Hypotest
from stats.likelihoods import HypotestSettings, hypotest_patch, switch_backend


class _Family(NamedTuple):
    """Everything the engine keeps per model structure."""

    structure: compact_model.Structure
    defaults: compact_model.ParameterDefaults
    programs: minimise.Programs
    names: tuple[str, ...]  # the parameters' names, pyhf's (model.config.par_names)


class PatchEngine:
    """Computes CLs for patches of one background-only workspace, reusing compiled likelihoods.

    Args:
        bkg_only: the validated background-only workspace specification.
        settings: hypotest settings.
        shared: :func:`~stats.compact.padding.shared_modifiers` of the patches to come, so they share one
            compiled structure.
    """

    def __init__(self, bkg_only: dict, settings: HypotestSettings, shared: dict | None = None):
        self.bkg_only, self.settings, self.shared = bkg_only, settings, shared or {}
        #: Patches computed by pyhf, with the reason.
        self.fallbacks: dict[str, str] = {}
        self._families: dict[tuple, _Family | str] = {}
        # The mu-independent fits of the latest patch (an upper-limit search tests one patch at many mu).
        self._kept: tuple[str, dict[str, Any]] = ("", {})
        self._modifiers = modifier_index(bkg_only)
        self._cells = compact_model.CellCache(bkg_only["channels"])
        workspace = pyhf.Workspace(bkg_only, validate=False)
        self._measurement = workspace.get_measurement()
        self._observations = dict(workspace.observations)

    def _pyhf_model(self, channels: list) -> tuple[Any, list[float]]:
        """A numpy pyhf model of ``channels`` and its observed data (validated inputs: no schema check)."""
        config = self._measurement["config"]
        switch_backend("numpy")
        model = pyhf.Model({"channels": channels, "parameters": config["parameters"]}, poi_name=config["poi"],
                           modifier_settings=self.settings.modifier_settings(), validate=False)
        data = sum((list(self._observations[c]) for c in model.config.channels), []) + list(model.config.auxdata)
        return model, data

    def _numbers(self, family: _Family, channels: list) -> compact_model.Numbers:
        observations = {channel["name"]: self._observations[channel["name"]] for channel in channels}
        return compact_model.build_numbers(family.structure, channels, observations, family.defaults, cache=self._cells)

    def _family(self, key: tuple, channels: list) -> _Family:
        """The compiled family of ``channels`` (their :func:`~stats.compact.model.structure_key` ``key``), built and
        checked against pyhf on first use.

        Raises:
            Unsupported: the structure is not implemented, or its likelihood differs from pyhf's (both remembered
                for the structure); or these channels' numbers are not (a patch's own refusal, not remembered).
        """
        if key not in self._families:
            model, data = self._pyhf_model(channels)
            try:
                structure = compact_model.build_structure(channels, model.config, self.settings.modifier_settings())
                defaults = compact_model.parameter_defaults(model.config, model.spec.get("parameters", []))
            except Unsupported as err:
                self._families[key] = str(err)
                raise
            family = _Family(structure, defaults, minimise.make_programs(structure), tuple(model.config.par_names))
            # Unsupported numbers (a normsys factor <= 0) are this patch's: the structure is checked with the next.
            problem = compact_model.verify(structure, self._numbers(family, channels), model, data)
            self._families[key] = family if problem is None else f"compact model check failed: {problem}"
        known = self._families[key]
        if isinstance(known, str):
            raise Unsupported(known)
        return known

    def _patched_channels(self, patch: dict) -> list:
        """The channels with any JSON-patch operations on them applied (replace, remove, ...: a full copy).

        Raises:
            Unsupported: the patch changes something else (observations, measurements): the compact path takes
                those from the background-only workspace.
        """
        for op in patch["patch"]:
            for path in (op.get("path", ""), op.get("from", "/channels/")):
                if not path.startswith("/channels/"):
                    raise Unsupported(f"the patch changes {path or 'the whole workspace'} (the compact path patches "
                                      "channels only)")
        try:
            return jsonpatch.apply_patch({"channels": self.bkg_only["channels"]}, patch["patch"])["channels"]
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
            raise Unsupported(f"the patch does not apply: {err}") from None

    def _compact(self, patch: dict) -> Hypotest:
        """The verified hypotest through the compact likelihood.

        Raises:
            Unsupported: why this patch cannot take that path.
        """
        if self.settings.test_stat not in ("qtilde", "q"):
            raise Unsupported(f"test statistic {self.settings.test_stat}")
        canonical = canonical_patch(patch, self.shared, self.bkg_only)
        problem = padding_problem(patch, canonical, self._modifiers)
        if problem is not None:
            raise Unsupported(problem)
        channels = shallow_apply(self.bkg_only["channels"], canonical)
        if channels is None:
            channels = self._patched_channels(canonical)
        family = self._family(compact_model.structure_key(channels, self._cells), channels)
        numbers = self._numbers(family, channels)
        poi = family.structure.poi_index
        lower, upper = float(numbers.lower[poi]), float(numbers.upper[poi])
        if not lower <= 0.0 <= upper or not lower <= self.settings.mu <= upper:
            raise Unsupported(f"the POI's bounds [{lower:g}, {upper:g}] exclude 0 or mu = {self.settings.mu:g} "
                              "(a hypotest needs both; pyhf refuses it too)")
        return compact_hypotest.hypotest(family.programs, family.structure, numbers,
                                         mu=self.settings.mu, test_stat=self.settings.test_stat,
                                         names=family.names, reuse=self._kept_fits(patch))

    def _kept_fits(self, patch: dict) -> dict[str, Any]:
        """The fits kept for ``patch`` under these settings but ``mu`` (:func:`stats.hypotest.run_five_fits`'s
        ``reuse``): the same dict while the engine tests the same patch, a new one for another."""
        key = json.dumps([patch["patch"], self.settings._replace(mu=0.0)], sort_keys=True, default=str)
        if key != self._kept[0]:
            self._kept = (key, {})
        return self._kept[1]

    def run(self, patch: dict) -> Hypotest:
        """The verified hypotest of one patch (a ``{"metadata": ..., "patch": [...]}`` dict).

        Raises:
            FitError: neither the compact path nor pyhf verified the fits (or CLs is undefined).
        """
        try:
            return self._compact(patch)
        except Unsupported as err:  # the one place the compact path hands a point to pyhf
            reason = str(err)
        except Exception as err:  # noqa: BLE001 - any other failure of the compact path is pyhf's to compute too
            reason = f"compact path failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        name = patch["metadata"]["name"]
        if reason not in self.fallbacks.values():  # once per reason: the worker's log stays readable
            print(f"patch {name}: {reason}; computed with pyhf", file=sys.stderr)
        self.fallbacks[name] = reason
        return hypotest_patch(self.bkg_only, patch, self.settings._replace(backend="numpy"), fallback=reason)
