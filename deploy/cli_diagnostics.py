"""``opendata-stats diagnostics``: pulls, ranking and correlations of a workspace or a published likelihood's patch."""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import click

from deploy.analysis import identity, write_json
from deploy.errors import DeployError
from deploy.cli_options import LikelihoodsType, config_option, dask_or_local, scheduler_option, settings_from_flags, workers_option
from stats.errors import WorkspaceError, first_line


def _model_and_data(source: pathlib.Path, patch_key: str | None, settings: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The model and data of a workspace file, or of one patch of published likelihoods, and what they came from."""
    import pyhf

    from stats.hepdata import load_likelihoods
    from stats.likelihoods import find_patch, patched_model
    from stats.patchscan import patch_digest

    if source.is_file() and source.suffix == ".json":
        if patch_key:
            raise DeployError(f"--patch {patch_key}: {source} is a workspace file, which has no patches")
        try:
            spec = json.loads(source.read_text())
            workspace = pyhf.Workspace(spec)
        except (ValueError, pyhf.exceptions.InvalidSpecification) as err:
            raise WorkspaceError(f"{source} is not a valid pyhf workspace: {first_line(err)}") from None
        model = workspace.model(modifier_settings=settings.modifier_settings())
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        return model, workspace.data(model), {"workspace": str(source), "sha256": digest}
    if not patch_key:
        raise DeployError(f"{source} holds published likelihoods: name one patch with --patch (a name, values or "
                          "part of a name)")
    loaded = load_likelihoods(source)
    patch = find_patch(loaded.patchset, patch_key)
    model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch}, settings)
    return model, data, {"likelihoods": str(source), "patch": patch.name,
                         "patch_digest": patch_digest({"patch": list(patch.patch)}),
                         "bkg_only_digest": loaded.patchset.digests}


@click.command()
@click.argument("source", type=LikelihoodsType(exists=True))
@click.option("--patch", "patch_key", help="The patch of published likelihoods: name, values (900,250) or part of "
                                           "its name (650_0).")
@config_option
@workers_option(in_process=True, default="in this process")
@scheduler_option
@click.option("--no-ranking", is_flag=True, help="Only the fit, pulls and correlations (the ranking refits every "
                                                 "parameter four times).")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="Rank (refit) only the parameters of largest linearised impact |corr(POI, p)| sigma(POI), and show "
                   "them in the ranking figure.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Directory for diagnostics.json and the figures.")
@click.pass_context
def diagnostics(ctx: click.Context, source: pathlib.Path, patch_key: str | None, workers: int | None,
                scheduler: str | None, no_ranking: bool, top: int, out_dir: pathlib.Path, **_: object) -> None:
    """Pulls, impacts on the POI and correlations of SOURCE's verified fit; diagnostics.json and figures in --out.

    SOURCE is a pyhf workspace (e.g. the `workspace.json` that `fit` writes) or published likelihoods with
    --patch. Every fit is verified (Migrad from two starts, the lower valid minimum stands); the ranking's fits run
    as Dask tasks with --workers or --scheduler.
    """
    from stats.diagnostics import draw, fit_diagnostics

    configuration = settings_from_flags(ctx, {})
    settings = configuration.settings.patchset.hypotest_settings()._replace(backend="numpy")
    model, data, inputs = _model_and_data(source, patch_key, settings)
    with dask_or_local(configuration, workers, scheduler, in_process_by_default=True) as client:
        result = fit_diagnostics(model, data, rank=not no_ranking, top=top, client=client)
    fit = result.fit
    record = {
        "identity": identity(inputs, {"ranking": not no_ranking, "top": top,
                                     "modifier_settings": settings.modifier_settings()}),
        "twice_nll": fit.best_twice_nll, "edm": result.edm,
        "parameters": [{"name": name, "bestfit": value, "uncertainty": error, "pull": result.pulls.get(name)}
                       for name, value, error in zip(fit.labels, fit.bestfit, fit.uncertainty)],
        "correlation": {"labels": list(fit.labels), "matrix": fit.corr_mat},
        "ranking": [{"name": name, "impact": size, **result.fits.get(name, {})} for name, size in result.impacts()],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw(result, out_dir, max_parameters=top)
    record["figures"] = [str(path) for path in figures]
    write_json(out_dir / "diagnostics.json", record)
    poi = model.config.poi_index
    click.echo(f"POI {fit.labels[poi]} = {fit.bestfit[poi]:.4g} +/- {fit.uncertainty[poi]:.2g} "
               f"(-2lnL {fit.best_twice_nll:.4f}, EDM {result.edm:.2g})")
    for name, size in result.impacts()[:5]:
        click.echo(f"  impact {size:.3g}  {name}")
    pulled = sorted(result.pulls.items(), key=lambda item: -abs(item[1]))[:3]
    if pulled:
        click.echo("largest pulls: " + ", ".join(f"{name} {value:+.2f}" for name, value in pulled))
    click.echo(f"wrote {out_dir / 'diagnostics.json'} and {len(figures)} figures")
