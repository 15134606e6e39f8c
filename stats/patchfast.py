"""Fast CLs for many patches of one background-only workspace: compile the likelihood once, reuse it.

pyhf with jax recompiles the objective for every model, and SLSQP with fixed parameters as equality
constraints differentiates those constraints numerically. For patches of the same structure the
compiled likelihood differs only in the numbers the patch brings. So the first patch builds a jax
*template* model; the arrays that depend on the patch's numbers (found by perturbing them) become
runtime inputs, carried behind the observed data so that :func:`pyhf.infer.hypotest` runs unchanged
and jax reuses its compiled objective. Fixed parameters are stitched out instead of constrained.

Every patch is checked: the template's log-likelihood must equal the patch's own pyhf (numpy) model
at two parameter points, else the patch falls back to plain pyhf. The transformation is exact.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pyhf
from pyhf.optimize.opt_scipy import scipy_optimizer

from stats.likelihoods import CLsResult, HypotestSettings, hypotest, patched_model

_PERTURB_SCALE, _PERTURB_SHIFT = 1.37, 0.113


class _StitchingOptimizer(scipy_optimizer):
    """SLSQP with fixed parameters removed from the fit vector (same minimum, far fewer numeric gradients)."""

    def minimize(self, *args, **kwargs):
        kwargs["do_stitch"] = True
        return super().minimize(*args, **kwargs)


def _walk(obj: Any) -> dict[tuple, Any]:
    """Every numpy/jax array reachable from ``obj`` through attributes, dicts, lists and tuples, by path."""
    import jax

    seen: set[int] = set()
    found: dict[tuple, Any] = {}
    stack = [((), obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, (np.ndarray, jax.Array)):
            found[path] = item
            continue
        if id(item) in seen or isinstance(item, (str, bytes, int, float, bool, type(None), type)):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend((path + (key,), value) for key, value in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((path + (index,), value) for index, value in enumerate(item))
        elif hasattr(item, "__dict__"):
            stack.extend((path + (key,), value) for key, value in vars(item).items())
    return found


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key] if isinstance(obj, (dict, list, tuple)) else getattr(obj, key)
    return obj


def _set(obj: Any, path: tuple, value: Any) -> None:
    parent = _get(obj, path[:-1])
    if isinstance(parent, (dict, list)):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


def _perturbed(patch: dict) -> dict:
    def bump(item):
        if isinstance(item, dict):
            return {key: bump(value) for key, value in item.items()}
        if isinstance(item, list):
            return [bump(value) for value in item]
        if isinstance(item, float) or (isinstance(item, int) and not isinstance(item, bool)):
            return item * _PERTURB_SCALE + _PERTURB_SHIFT
        return item

    spec = copy.deepcopy(patch)
    spec["patch"] = bump(spec["patch"])
    return spec


class _Template:
    """A compiled-once jax model whose patch-dependent arrays are swapped in from the data vector."""

    def __init__(self, bkg_only: dict, patch: dict, settings: HypotestSettings):
        pyhf.set_backend("numpy")
        model, data = patched_model(bkg_only, patch, settings)
        other, _ = patched_model(bkg_only, _perturbed(patch), settings)
        mine, theirs = _walk(model), _walk(other)
        if mine.keys() != theirs.keys():
            raise ValueError("perturbing the patch changed the model structure")
        self.paths = tuple(
            sorted(
                (path for path, array in mine.items()
                 if array.dtype == bool or array.shape != theirs[path].shape or not np.array_equal(array, theirs[path])),
                key=repr,
            )
        )
        pyhf.set_backend("jax", _StitchingOptimizer())
        self.model, _ = patched_model(bkg_only, patch, settings)
        jax_leaves = _walk(self.model)
        self.kinds = [(tuple(np.shape(jax_leaves[p])), np.asarray(jax_leaves[p]).dtype == bool) for p in self.paths]
        self.ndata = len(data)
        self.signature = (tuple(model.config.par_order), self.ndata, tuple((p, s) for p, (s, _) in zip(self.paths, self.kinds)))

        import jax

        # Eager jax dispatch of the many small swaps costs seconds per patch; compile them too.
        self.logpdf = jax.jit(self._logpdf)
        self.expected_data = jax.jit(self._expected_data, static_argnums=2)

    def _logpdf(self, pars, data, flat):
        old = self.swap_in(flat)
        try:
            return self.model.logpdf(pars, data)
        finally:
            self.restore(old)

    def _expected_data(self, pars, flat, include_auxdata):
        import jax.numpy as jnp

        old = self.swap_in(flat)
        try:
            expected = self.model.expected_data(pars, include_auxdata=include_auxdata)
        finally:
            self.restore(old)
        return jnp.concatenate([expected, flat]) if include_auxdata else expected

    def leaves(self, model: pyhf.pdf.Model) -> np.ndarray:
        return np.concatenate([np.asarray(_get(model, p), dtype=float).ravel() for p in self.paths])

    def swap_in(self, flat: Any) -> list:
        old, offset = [], 0
        for path, (shape, is_bool) in zip(self.paths, self.kinds):
            size = int(np.prod(shape))
            value = flat[offset:offset + size].reshape(shape)
            offset += size
            old.append(_get(self.model, path))
            _set(self.model, path, value > 0.5 if is_bool else value)
        return old

    def restore(self, old: list) -> None:
        for path, value in zip(self.paths, old):
            _set(self.model, path, value)


class _TemplatePdf:
    """Stands in for a pyhf model; hashes by the template so jax reuses the compiled objective."""

    def __init__(self, template: _Template, config: Any, flat: Any):
        self.template, self.config, self._flat = template, config, flat

    def __hash__(self) -> int:
        return hash(self.template.signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TemplatePdf) and other.template is self.template

    def logpdf(self, pars, data):
        old = self.template.swap_in(data[self.template.ndata:])
        try:
            return self.template.model.logpdf(pars, data[: self.template.ndata])
        finally:
            self.template.restore(old)

    def expected_data(self, pars, include_auxdata=True):
        return self.template.expected_data(pars, self._flat, include_auxdata)


_NEUTRAL_TYPES = ("normsys", "histosys")


def shared_modifiers(bkg_only: dict, patches: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per added sample (JSON-patch path): every normsys/histosys that some patch puts there.

    Only parameters of the background-only workspace count, so that adding a missing one with no
    effect (normsys hi = lo = 1, histosys hi = lo = nominal) leaves the model's parameters unchanged.
    """
    known = {
        modifier["name"]
        for channel in bkg_only["channels"]
        for sample in channel["samples"]
        for modifier in sample["modifiers"]
    }
    union: dict[str, set] = {}
    for patch in patches:
        for op in patch["patch"]:
            if op.get("op") == "add" and isinstance(op.get("value"), dict) and "modifiers" in op["value"]:
                union.setdefault(op["path"], set()).update(
                    (m["name"], m["type"]) for m in op["value"]["modifiers"]
                    if m["type"] in _NEUTRAL_TYPES and m["name"] in known
                )
    return {path: sorted(items) for path, items in union.items()}


def canonical_patch(patch: dict, shared: dict[str, list[tuple[str, str]]]) -> dict:
    """The patch with every shared modifier it lacks added with no effect (an exact transformation)."""
    spec = copy.deepcopy(patch)
    for op in spec["patch"]:
        extra = shared.get(op.get("path"))
        if not extra or op.get("op") != "add":
            continue
        sample = op["value"]
        have = {(m["name"], m["type"]) for m in sample["modifiers"]}
        for name, kind in extra:
            if (name, kind) in have:
                continue
            data = {"hi": 1.0, "lo": 1.0} if kind == "normsys" else {"hi_data": list(sample["data"]), "lo_data": list(sample["data"])}
            sample["modifiers"].append({"name": name, "type": kind, "data": data})
    return spec


def _signature(patch: dict) -> tuple:
    return tuple(
        (op.get("op"), op.get("path"), tuple(sorted((m["name"], m["type"]) for m in op["value"].get("modifiers", [])))
         if isinstance(op.get("value"), dict) else None)
        for op in patch["patch"]
    )


class PatchEngine:
    """Computes CLs for patches of one background-only workspace, reusing compiled likelihoods.

    Args:
        bkg_only: the validated background-only workspace specification.
        settings: hypotest settings (``backend`` must be ``"jax"``).
        shared: :func:`shared_modifiers` of the patches to come, so they share one compiled structure.
    """

    def __init__(self, bkg_only: dict, settings: HypotestSettings, shared: dict | None = None):
        self.bkg_only, self.settings, self.shared = bkg_only, settings, shared or {}
        self._templates: dict[tuple, _Template] = {}
        self.fallbacks = 0

    def _agrees(self, pdf: _TemplatePdf, model: pyhf.pdf.Model, data: list[float], flat: Any) -> bool:
        import jax.numpy as jnp

        init = np.asarray(model.config.suggested_init(), dtype=float)
        bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
        trial = np.clip(init + 0.1 * np.sin(np.arange(init.size) + 1.0), bounds[:, 0], bounds[:, 1])
        pyhf.set_backend("numpy")
        expected = [float(model.logpdf(point, np.asarray(data))[0]) for point in (init, trial)]
        pyhf.set_backend("jax", _StitchingOptimizer())
        got = [float(pdf.template.logpdf(jnp.asarray(point), jnp.asarray(data), flat)[0]) for point in (init, trial)]
        return np.allclose(got, expected, rtol=1e-12, atol=1e-10)

    def run(self, patch: dict) -> CLsResult:
        """CLs of one patch (a ``{"metadata": ..., "patch": [...]}`` dict)."""
        import jax.numpy as jnp

        pyhf.set_backend("numpy")
        model, data = patched_model(self.bkg_only, patch, self.settings)
        canonical = canonical_patch(patch, self.shared)
        key = _signature(canonical)
        if key not in self._templates:
            self._templates[key] = _Template(self.bkg_only, canonical, self.settings)
        template = self._templates[key]
        canonical_model, _ = patched_model(self.bkg_only, canonical, self.settings)
        same_pars = tuple(canonical_model.config.par_order) == tuple(model.config.par_order)
        flat = jnp.asarray(template.leaves(canonical_model))
        pdf = _TemplatePdf(template, model.config, flat)
        if not same_pars or not self._agrees(pdf, model, data, flat):
            self.fallbacks += 1
            pyhf.set_backend("jax", _StitchingOptimizer())
            jax_model, jax_data = patched_model(self.bkg_only, patch, self.settings)
            return hypotest(jax_model, jax_data, self.settings)
        pyhf.set_backend("jax", _StitchingOptimizer())
        return hypotest(pdf, jnp.concatenate([jnp.asarray(data), flat]), self.settings)
