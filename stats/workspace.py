"""The tutorial's pyhf workspace: one channel, a signal sample scaled by ``mu`` and a background with shapesys."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyhf

from stats.background import BackgroundFit
from stats.errors import WorkspaceError, first_line

#: The channel and the signal strength (POI) of the analysis's workspaces (this one and the mass patchset's).
CHANNEL = "Hyy"
POI = "mu"


def build_workspace(
    counts: Sequence[float] | np.ndarray,
    fit: BackgroundFit,
    *,
    channel: str = CHANNEL,
) -> dict[str, Any]:
    """Build and validate the tutorial's workspace from a background fit.

    Samples: ``signal`` (the fitted Gaussian, normfactor ``mu``) and ``background`` (the fitted polynomial, with a
    per-bin ``shapesys`` of the fit's background uncertainty); observations: ``counts``. A robust fit can return a
    negative peak; its template is then the Gaussian shape scaled to the yield's 1 sigma uncertainty, so that
    ``mu`` stays a positive scale and a deficit shows up as ``mu_hat < 0`` rather than as a broken model.

    Args:
        counts: observed events per bin (the data the fit was made to).
        fit: the background fit.
        channel: channel name.

    Raises:
        WorkspaceError: if the spec fails pyhf's schema validation or the sizes differ.

    Returns:
        dict: the workspace specification (JSON-serialisable).
    """
    counts = np.asarray(counts, dtype=float)
    signal = np.asarray(fit.signal, dtype=float)
    if fit.signal_yield <= 0:
        scale = fit.signal_yield_unc if np.isfinite(fit.signal_yield_unc) and fit.signal_yield_unc > 0 else 1.0
        shape = signal / fit.signal_yield if fit.signal_yield < 0 else None
        if shape is None or not np.all(np.isfinite(shape)):
            raise WorkspaceError(f"the fit at {fit.mass} GeV has a zero signal template; no workspace can be built")
        signal = shape * scale
    if not counts.size == signal.size == fit.background.size:
        raise WorkspaceError(f"{counts.size} data bins, {signal.size} signal bins, {fit.background.size} background bins")
    spec = {
        "channels": [{
            "name": channel,
            "samples": [
                {"name": "signal", "data": signal.tolist(),
                 "modifiers": [{"name": POI, "type": "normfactor", "data": None}]},
                {"name": "background", "data": np.asarray(fit.background, dtype=float).tolist(),
                 "modifiers": [{"name": "background_uncertainty", "type": "shapesys",
                                "data": np.asarray(fit.background_unc, dtype=float).tolist()}]},
            ],
        }],
        "observations": [{"name": channel, "data": counts.tolist()}],
        "measurements": [{"name": "Hyy_mass_fit", "config": {"poi": POI, "parameters": []}}],
        "version": "1.0.0",
    }
    return validate_workspace(spec)


def validate_workspace(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate a workspace specification with pyhf, returning it unchanged.

    Raises:
        WorkspaceError: naming pyhf's objection.
    """
    try:
        pyhf.Workspace(spec)
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidWorkspaceOperation, KeyError) as err:
        raise WorkspaceError(f"invalid workspace: {first_line(err)}") from err
    return spec


def save_workspace(spec: dict[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """Write a workspace as indented JSON, returning the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2, sort_keys=True))
    return path


def load_workspace(path: str | pathlib.Path) -> dict[str, Any]:
    """Read and validate a workspace JSON file.

    Raises:
        WorkspaceError: if the file is missing, not JSON, or not a valid workspace.
    """
    path = pathlib.Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkspaceError(f"cannot read workspace {path}: {err}") from err
    return validate_workspace(spec)


def model_info(spec: dict[str, Any]) -> dict[str, Any]:
    """Describe the model of a workspace: POI, channels, bins, samples, modifiers, parameters and auxdata.

    Args:
        spec: a workspace specification.

    Returns:
        dict: the model's structure, JSON-serialisable.
    """
    workspace = pyhf.Workspace(validate_workspace(spec))
    model = workspace.model()
    config = model.config
    return {
        "poi": config.poi_name,
        "channels": list(config.channels),
        "bins": {name: int(n) for name, n in config.channel_nbins.items()},
        "samples": list(config.samples),
        "modifiers": [list(modifier) for modifier in config.modifiers],
        "parameters": list(config.par_order),
        "n_parameters": int(config.npars),
        "auxdata": [float(value) for value in model.config.auxdata],
    }


def format_model_info(info: dict[str, Any]) -> str:
    """Render ``model_info`` as a few lines of text (auxdata summarised)."""
    aux = info["auxdata"]
    modifiers = ", ".join(f"{name} ({kind})" for name, kind in info["modifiers"])
    channels = ", ".join(f"{name} ({info['bins'][name]} bins)" for name in info["channels"])
    return "\n".join([
        f"POI: {info['poi']}",
        f"channels: {channels}",
        f"samples: {', '.join(info['samples'])}",
        f"modifiers: {modifiers}",
        f"parameters: {', '.join(info['parameters'])} ({info['n_parameters']} in total)",
        f"auxdata: {len(aux)} values" + (f", from {min(aux):.4g} to {max(aux):.4g}" if aux else ""),
    ])
