"""Patches of a published patchset: lookup, listing, and the CLs hypotest of one patch with pyhf."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, NamedTuple

import pyhf

from stats.errors import UnknownPatchError
from stats.hypotest import Hypotest, pyhf_hypotest


def default_backend() -> str:
    """``"jax"`` when jax is installed (the compact engine of :mod:`stats.compact`), else ``"numpy"``."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return "numpy"
    return "jax"


class HypotestSettings(NamedTuple):
    """How a patch is tested: signal strength, test statistic, interpolation codes, backend."""

    mu: float = 1.0
    test_stat: str = "qtilde"
    normsys: str = "code4"
    histosys: str = "code4p"
    backend: str = "numpy"

    def modifier_settings(self) -> dict[str, dict[str, str]]:
        """The interpolation codes as pyhf's ``Model(modifier_settings=...)`` takes them."""
        return {"normsys": {"interpcode": self.normsys}, "histosys": {"interpcode": self.histosys}}


class PatchSummary(NamedTuple):
    """A patch as listed: its name and its values (one per label of the patchset)."""

    name: str
    values: tuple[float, ...]


#: A number as a patch value: digits with an optional sign, decimal point and exponent, and nothing else (no
#: underscores, which Python's int() and float() accept: ``650_0`` is a name fragment, not 6500).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _parse_values(values: str | tuple | list) -> tuple[float, ...]:
    """Patch values from ``"900,250"`` or a sequence; each item strictly a number.

    Raises:
        UnknownPatchError: an item is not a plain number.
    """
    items = values.split(",") if isinstance(values, str) else list(values)
    parsed = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not _NUMBER.fullmatch(text):
            raise UnknownPatchError(f"patch values must be numbers separated by commas, got {values!r}")
        parsed.append(float(text))
    return tuple(parsed)


def _fragment_matches(patchset: pyhf.PatchSet, fragment: str) -> list[pyhf.patchset.Patch]:
    """Patches whose name holds ``fragment`` as whole ``_``-separated parts (``650_0`` in ``C1N2_Wh_hbb_650_0``)."""
    wanted = fragment.split("_")
    found = []
    for patch in patchset.patches:
        parts = patch.name.split("_")
        if any(parts[i:i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1)):
            found.append(patch)
    return found


def _by_fragment(patchset: pyhf.PatchSet, fragment: str) -> pyhf.patchset.Patch:
    matches = _fragment_matches(patchset, fragment)
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(p.name for p in matches[:10]) + (f", ... ({len(matches) - 10} more)" if len(matches) > 10 else "")
        raise UnknownPatchError(f"{fragment!r} matches {len(matches)} patches: {shown}; give more of the name, "
                                "or the values")
    close = difflib.get_close_matches(fragment, [p.name for p in patchset.patches], n=3, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise UnknownPatchError(f"no patch named {fragment!r}{hint}")


def find_patch(patchset: pyhf.PatchSet, key: str | tuple | list) -> pyhf.patchset.Patch:
    """Return the patch named ``key``, with values ``key`` (``"900,250"`` or ``(900, 250)``), or whose name holds
    ``key`` as whole ``_``-separated parts (``"650_0"`` finds ``C1N2_Wh_hbb_650_0``) when exactly one does.

    Values are parsed strictly: ``650_0`` is a name fragment, never the number 6500.

    Raises:
        UnknownPatchError: no such patch (the message names the closest ones), values that are not numbers, or a
            fragment that several patches hold (the message lists them).
    """
    by_name = {patch.name: patch for patch in patchset.patches}
    if isinstance(key, str) and key in by_name:
        return by_name[key]
    if isinstance(key, str) and not all(_NUMBER.fullmatch(part.strip()) for part in key.split(",")):
        if "," in key:
            _parse_values(key)  # raises: values that are not all numbers
        return _by_fragment(patchset, key)
    values = _parse_values(key)
    if len(values) != len(patchset.labels):
        if isinstance(key, str) and "," not in key:
            return _by_fragment(patchset, key)
        raise UnknownPatchError(f"expected {len(patchset.labels)} values ({','.join(patchset.labels)}), got {key!r}")
    for patch in patchset.patches:
        if len(patch.values) == len(values) and all(math.isclose(a, b) for a, b in zip(patch.values, values)):
            return patch
    labels = ",".join(patchset.labels)
    nearest = sorted(
        patchset.patches,
        key=lambda p: sum((a - b) ** 2 for a, b in zip(p.values, values)) if len(p.values) == len(values) else math.inf,
    )[:3]
    hint = "; closest: " + ", ".join(f"{p.name} ({','.join(f'{v:g}' for v in p.values)})" for p in nearest)
    raise UnknownPatchError(f"no patch with values ({labels}) = {','.join(f'{v:g}' for v in values)}{hint}")


def select_patches(patchset: pyhf.PatchSet, keys: list | None = None) -> list[pyhf.patchset.Patch]:
    """The patches named or valued by ``keys`` (all when empty), in the given order, without repeats."""
    if not keys:
        return list(patchset.patches)
    chosen: dict[str, pyhf.patchset.Patch] = {}
    for key in keys:
        patch = find_patch(patchset, key)
        chosen.setdefault(patch.name, patch)
    return list(chosen.values())


def describe(patchset: pyhf.PatchSet) -> dict[str, Any]:
    """Description, labels, references, digests and patch list of a patchset, as plain data."""
    return {
        "description": patchset.description,
        "labels": list(patchset.labels),
        "references": dict(patchset.references),
        "digests": dict(patchset.digests),
        "version": patchset.version,
        "patches": [PatchSummary(p.name, tuple(p.values))._asdict() for p in patchset.patches],
    }


def patched_model(bkg_only: dict, patch: dict, settings: HypotestSettings) -> tuple[pyhf.pdf.Model, list[float]]:
    """Model and observed data of ``bkg_only`` with the JSON patch ``patch`` applied (inputs validated on load)."""
    workspace = pyhf.Workspace(pyhf.patchset.Patch(patch).apply(bkg_only), validate=False)
    model = workspace.model(modifier_settings=settings.modifier_settings(), validate=False)
    return model, workspace.data(model)


def switch_backend(name: str, optimizer: Any = None) -> None:
    """``pyhf.set_backend`` without re-preparing the models still alive.

    pyhf converts every live model to the new backend on a switch (eagerly, a second per switch for a
    published likelihood); code that builds each model under the backend it uses needs no conversion.
    """
    pyhf.events.disable("tensorlib_changed")
    try:
        pyhf.set_backend(name, optimizer)
    finally:
        pyhf.events.enable("tensorlib_changed")


def hypotest(model: pyhf.pdf.Model, data: Any, settings: HypotestSettings, fallback: str | None = None) -> Hypotest:
    """CLs at ``settings.mu`` with the expected band, through pyhf with every fit verified (:mod:`stats.hypotest`).

    Raises:
        FitError: a fit that cannot be verified to be a minimum, or an undefined CLs.
    """
    return pyhf_hypotest(model, data, mu=settings.mu, test_stat=settings.test_stat, backend=settings.backend,
                         fallback=fallback)


def hypotest_patch(bkg_only: dict, patch: dict, settings: HypotestSettings = HypotestSettings(),
                   fallback: str | None = None) -> Hypotest:
    """The verified hypotest of one patch through pyhf (the reference path; see :mod:`stats.compact`)."""
    switch_backend(settings.backend)  # the model is built under it: nothing alive needs converting
    try:
        model, data = patched_model(bkg_only, patch, settings)
        return hypotest(model, data, settings, fallback)
    finally:
        switch_backend("numpy")
