"""Fast CLs for many patches of one background-only workspace: compile the likelihood once, reuse it.

pyhf with jax recompiles the objective for every model, and SLSQP with fixed parameters as equality
constraints differentiates those constraints numerically. For patches of the same structure the
compiled likelihood differs only in the numbers the patch brings. So the first patch builds a jax
*template* model; the arrays that depend on the patch's numbers (found by perturbing them) become
runtime inputs, carried behind the observed data so that :func:`pyhf.infer.hypotest` runs unchanged
and jax reuses its compiled objective. Fixed parameters are stitched out instead of constrained.

All patches of a patchset share one template: :func:`canonical_patch` adds the modifiers other patches
put on a sample with no effect, and adds the samples other patches add (to channels this patch leaves
alone) with zero yields. Such padding may reorder pyhf's parameters, so the hypotest runs in the padded
model's order. Per patch, the models are built from a shallow copy of the workspace (only the touched
channels are copied) and the numpy models are dropped before switching to jax, since pyhf re-prepares
every live model, eagerly, on a backend switch.

Every patch is checked: the template's log-likelihood must equal the patch's own pyhf (numpy) model
at two parameter points, else the patch falls back to plain pyhf. The transformation is exact.
"""

from __future__ import annotations

import contextlib
import copy
import re
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyhf
from pyhf.optimize.opt_scipy import scipy_optimizer

from stats.likelihoods import CLsResult, HypotestSettings, hypotest, patched_model

_PERTURB_SCALE, _PERTURB_SHIFT = 1.37, 0.113


def _switch_backend(name: str, optimizer: Any = None) -> None:
    """``pyhf.set_backend`` without re-preparing the models still alive.

    pyhf converts every live model to the new backend on a switch (eagerly, a second per switch here);
    the engine builds each model under the backend it is used with, so nothing needs converting.
    """
    pyhf.events.disable("tensorlib_changed")
    try:
        pyhf.set_backend(name, optimizer)
    finally:
        pyhf.events.enable("tensorlib_changed")


@contextlib.contextmanager
def _no_spec_copy() -> Iterator[None]:
    """Build pyhf models without their defensive deep copy of the specification (most of the build time).

    Safe here: the engine never changes a specification after building a model from it.
    """
    module = pyhf.pdf.copy
    pyhf.pdf.copy = types.SimpleNamespace(deepcopy=lambda spec: spec)
    try:
        yield
    finally:
        pyhf.pdf.copy = module


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
        _switch_backend("numpy")
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
        _switch_backend("jax", _StitchingOptimizer())
        self.model, _ = patched_model(bkg_only, patch, settings)
        jax_leaves = _walk(self.model)
        self.kinds = [(tuple(np.shape(jax_leaves[p])), np.asarray(jax_leaves[p]).dtype == bool) for p in self.paths]
        self.ndata = len(data)
        self.signature = (tuple(model.config.par_order), self.ndata, tuple((p, s) for p, (s, _) in zip(self.paths, self.kinds)))
        # jax hashes the model (a static argument) at every objective call: hash the long signature once.
        self.hash = hash(self.signature)

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
        return self.template.hash

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
#: On a zero-yield padding sample these modifiers have no effect either (0 times anything adds 0).
_PADDING_TYPES = ("normsys", "histosys", "staterror", "lumi", "normfactor")


def _added_sample(op: dict) -> bool:
    return op.get("op") == "add" and isinstance(op.get("value"), dict) and "modifiers" in op["value"]


def shared_modifiers(bkg_only: dict, patches: list[dict]) -> dict[str, dict]:
    """Per added sample (JSON-patch path): its name, bin count, and every modifier some patch puts there.

    :func:`canonical_patch` pads each patch with these, with no effect, so that all patches share one
    model structure (one jax compilation). Only parameters the patch's model already has are added
    (see :func:`canonical_patch`), so the model's parameters are unchanged.
    """
    union: dict[str, dict] = {}
    for patch in patches:
        for op in patch["patch"]:
            if _added_sample(op):
                entry = union.setdefault(op["path"], {"name": op["value"].get("name"),
                                                      "nbins": len(op["value"].get("data", [])), "modifiers": set()})
                entry["modifiers"].update((m["name"], m["type"]) for m in op["value"]["modifiers"])
    return {path: {**entry, "modifiers": sorted(entry["modifiers"])} for path, entry in union.items()}


def _neutral_data(kind: str, nominal: list) -> Any:
    if kind == "normsys":
        return {"hi": 1.0, "lo": 1.0}
    if kind == "histosys":
        return {"hi_data": list(nominal), "lo_data": list(nominal)}
    if kind == "staterror":
        return [0.0] * len(nominal)
    return None


def _channel_index(op: dict) -> int:
    match = re.fullmatch(r"/channels/(\d+)/samples/\d+", op.get("path", ""))
    return int(match.group(1)) if match else -1


def canonical_patch(patch: dict, shared: dict[str, dict], bkg_only: dict | None = None) -> dict:
    """The patch padded to the shared structure with no effect (an exact transformation).

    Added samples get every shared normsys/histosys they lack (hi = lo = 1, hi = lo = nominal). With
    ``bkg_only`` given, a sample path the patch does not add is added with zero yields and the shared
    modifiers of the padding kinds. Only modifiers whose parameter the patched model already has are
    added (those of ``bkg_only`` and of the patch), so the parameters stay the same.
    """
    spec = copy.deepcopy(patch)
    known = {m["name"] for op in spec["patch"] if _added_sample(op) for m in op["value"]["modifiers"]}
    if bkg_only is not None:
        known |= {m["name"] for channel in bkg_only["channels"] for sample in channel["samples"]
                  for m in sample["modifiers"]}
    else:
        known = None
    present = set()
    for op in spec["patch"]:
        entry = shared.get(op.get("path"))
        if not entry or not _added_sample(op):
            continue
        present.add(op["path"])
        sample = op["value"]
        have = {(m["name"], m["type"]) for m in sample["modifiers"]}
        for name, kind in entry["modifiers"]:
            if (name, kind) in have or kind not in _NEUTRAL_TYPES or (known is not None and name not in known):
                continue
            sample["modifiers"].append({"name": name, "type": kind, "data": _neutral_data(kind, sample["data"])})
    if bkg_only is None or not all(op.get("op") == "add" and _channel_index(op) >= 0 for op in spec["patch"]):
        return spec
    touched = {_channel_index(op) for op in spec["patch"]}
    names = [op["value"].get("name") for op in spec["patch"] if _added_sample(op)]
    for path, entry in shared.items():
        if path in present or _channel_index({"path": path}) in touched:
            continue
        zeros = [0.0] * entry["nbins"]
        modifiers = [{"name": name, "type": kind, "data": _neutral_data(kind, zeros)}
                     for name, kind in entry["modifiers"] if kind in _PADDING_TYPES and name in known]
        spec["patch"].append({"op": "add", "path": path,
                              "value": {"name": names[0] if names else entry["name"], "data": zeros, "modifiers": modifiers}})
    spec["patch"].sort(key=_channel_index)
    return spec


def _signature(patch: dict) -> tuple:
    return tuple(
        (op.get("op"), op.get("path"), tuple(sorted((m["name"], m["type"]) for m in op["value"].get("modifiers", []))))
        if isinstance(op.get("value"), dict) else (op.get("op"), op.get("path"), None)
        for op in patch["patch"]
    )


def _shallow_apply(channels: list, patch: dict) -> list | None:
    """``channels`` with the patch's added samples, copying only the touched channels (None: other ops)."""
    channels = list(channels)
    for op in patch["patch"]:
        match = re.fullmatch(r"/channels/(\d+)/samples/(\d+|-)", op.get("path", ""))
        if op.get("op") != "add" or not match or int(match.group(1)) >= len(channels):
            return None
        index = int(match.group(1))
        channel = dict(channels[index])
        samples = list(channel["samples"])
        where = len(samples) if match.group(2) == "-" else int(match.group(2))
        if where > len(samples):
            return None
        samples.insert(where, op["value"])
        channel["samples"] = samples
        channels[index] = channel
    return channels


def _permutation(config: Any, own: Any) -> np.ndarray | None:
    """Indices taking a parameter vector in ``own``'s order to ``config``'s order (None: other parameters)."""
    if sorted(config.par_order) != sorted(own.par_order) or config.npars != own.npars:
        return None
    index = np.arange(own.npars)
    order = []
    for name in config.par_order:
        mine, theirs = config.par_slice(name), own.par_slice(name)
        if mine.stop - mine.start != theirs.stop - theirs.start:
            return None
        order.extend(index[theirs])
    return np.asarray(order)


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
        self._padding_checked: set[tuple] = set()
        workspace = pyhf.Workspace(bkg_only, validate=False)
        self._measurement = workspace.get_measurement()
        self._observations = dict(workspace.observations)

    def _model(self, patch: dict) -> tuple[pyhf.pdf.Model, list[float]]:
        """What :func:`stats.likelihoods.patched_model` returns, without deep-copying the workspace thrice."""
        channels = _shallow_apply(self.bkg_only["channels"], patch)
        if channels is None:
            return patched_model(self.bkg_only, patch, self.settings)
        config = self._measurement["config"]
        with _no_spec_copy():
            model = pyhf.Model({"channels": channels, "parameters": config["parameters"]}, poi_name=config["poi"],
                               modifier_settings=self.settings.modifier_settings(), validate=False)
        data = sum((list(self._observations[c]) for c in model.config.channels), []) + list(model.config.auxdata)
        return model, data

    @staticmethod
    def _check_points(config: Any) -> tuple[np.ndarray, np.ndarray]:
        init = np.asarray(config.suggested_init(), dtype=float)
        bounds = np.asarray(config.suggested_bounds(), dtype=float)
        trial = np.clip(init + 0.1 * np.sin(np.arange(init.size) + 1.0), bounds[:, 0], bounds[:, 1])
        return init, trial

    def run(self, patch: dict) -> CLsResult:
        """CLs of one patch (a ``{"metadata": ..., "patch": [...]}`` dict).

        Two checks guard the template, at two parameter points each: its log-likelihood must equal the
        padded (canonical) pyhf model's, for every patch (no patch-dependent array was missed); and the
        canonical model's must equal the patch's own model's, for the first patch of each structure
        (padding has no effect; it is exact for any numbers, so one patch per structure shows it).
        """
        import jax.numpy as jnp

        _switch_backend("numpy")
        canonical = canonical_patch(patch, self.shared, self.bkg_only)
        key = _signature(canonical)
        if key not in self._templates:
            self._templates[key] = _Template(self.bkg_only, canonical, self.settings)
            _switch_backend("numpy")
        template = self._templates[key]
        canonical_model, canonical_data = self._model(canonical)
        points = self._check_points(canonical_model.config)
        expected = [float(canonical_model.logpdf(point, np.asarray(canonical_data))[0]) for point in points]
        own = _signature(patch)
        if own not in self._padding_checked:
            model, data = self._model(patch)
            # Padding may reorder the parameters (pyhf orders them by first appearance): map the patch's
            # own parameter points onto the canonical order.
            order = _permutation(canonical_model.config, model.config)
            own_points = self._check_points(model.config)
            padded_ok = order is not None and np.allclose(
                [float(canonical_model.logpdf(point[order], np.asarray(canonical_data))[0]) for point in own_points],
                [float(model.logpdf(point, np.asarray(data))[0]) for point in own_points], rtol=1e-12, atol=1e-10,
            )
            del model
            if not padded_ok:
                return self._fallback(patch)
            self._padding_checked.add(own)
        flat_values = template.leaves(canonical_model)
        config = canonical_model.config
        del canonical_model
        _switch_backend("jax", _StitchingOptimizer())
        flat = jnp.asarray(flat_values)
        got = [float(template.logpdf(jnp.asarray(point), jnp.asarray(canonical_data), flat)[0]) for point in points]
        if not np.allclose(got, expected, rtol=1e-12, atol=1e-10):
            return self._fallback(patch)
        pdf = _TemplatePdf(template, config, flat)
        return hypotest(pdf, jnp.concatenate([jnp.asarray(canonical_data), flat]), self.settings)

    def _fallback(self, patch: dict) -> CLsResult:
        """Plain pyhf (jax) for a patch the template does not reproduce."""
        self.fallbacks += 1
        _switch_backend("jax", _StitchingOptimizer())
        jax_model, jax_data = patched_model(self.bkg_only, patch, self.settings)
        return hypotest(jax_model, jax_data, self.settings)
