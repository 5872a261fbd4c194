"""``augforge export`` (checkpoint / run / registered model -> ONNX file -> registered version) and
``augforge generate`` (ONNX file -> images + metadata.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from augforge.errors import AugforgeError
from augforge.export.onnx import DEFAULT_ALIAS, read_metadata
from augforge.export.generate import generate_images, parse_counts
from augforge.export.sources import checkpoint_for_run, export_checkpoint, model_version, register_onnx




@click.command("export")
@click.option("--run", "run_id", help="Tracked training run id (its best checkpoint, else its last).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="An augforge checkpoint file (.pt).")
@click.option("--model", "model_uri", help="A registered model, e.g. models:/augforge-synthetic-lesions@champion.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--uint8", is_flag=True, help="Output uint8 [batch, H, W, 3] in [0, 255] instead of float NCHW in [-1, 1].")
@click.option("--last", is_flag=True, help="With --run: the last checkpoint, not the best one.")
@click.option("--no-ema", is_flag=True, help="Export the raw generator weights even when EMA weights exist.")
@click.option("--with-discriminator", is_flag=True,
              help="Also write the run's discriminator beside the file (OUT.discriminator.onnx): realism scores for "
                   "`generate --filter realism` and the runtime's SyntheticLesions(filter='realism') without the checkpoint.")
@click.option("--register", "register_name", default="", help="Also register the file in the MLflow model registry under this name.")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias set on the registered version (with --register).")
@click.option("--tracking-uri", default="", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or mlruns/mlflow.db).")
def export_command(run_id, checkpoint, model_uri, out, uint8, last, no_ema, with_discriminator, register_name, alias, tracking_uri):
    """Export a generator to one ONNX file (z[, label] -> image) with metadata and a parity check."""
    given = [x for x in (run_id, checkpoint, model_uri) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --run ID, --checkpoint PATH, --model models:/NAME@ALIAS")
    uri = tracking_uri or None
    if model_uri:
        mv = model_version(model_uri, uri)
        run_id = (mv.tags or {}).get("augforge.training_run_id") or ""
        if not run_id:
            raise AugforgeError(f"{model_uri} (version {mv.version}) has no augforge.training_run_id tag; export with --run or --checkpoint")
        click.echo(f"{model_uri} is version {mv.version}, trained in run {run_id}")
    if run_id:
        checkpoint = checkpoint_for_run(run_id, uri, best=not last)
    path = export_checkpoint(checkpoint, out, uint8=uint8, ema=not no_ema, with_discriminator=with_discriminator)
    meta = read_metadata(path)
    click.echo(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {meta['generator'] or 'generator'} "
        f"{meta['image_size']}px, classes {', '.join(json.loads(meta['class_names'])) or '(unconditional)'}, "
        f"output {meta['output_layout']} in {meta['value_range']}; parity check passed ({meta['exporter']})"
    )
    if meta.get("discriminator_file"):
        d_path = path.with_name(meta["discriminator_file"])
        click.echo(f"wrote {d_path} ({d_path.stat().st_size / 1e6:.1f} MB): its discriminator (realism scores), "
                   "named in the generator's metadata; keep the two files together")
    if register_name:
        mv = register_onnx(path, register_name, alias=alias, run_id=meta.get("training_run_id") or None, tracking_uri=uri)
        click.echo(f"registered models:/{register_name}/{mv.version} with alias @{alias}")


@click.command("generate")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="An ONNX file written by `augforge export`.")
@click.option("--model", "model_uri", help="A registered model, e.g. models:/augforge-synthetic-lesions@champion.")
@click.option("--per-class", type=int, default=None, help="Images for every class the generator makes.")
@click.option("--counts", default=None, help="Images per class, e.g. mel=500,bcc=300.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (images/ + metadata.csv).")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same files.")
@click.option("--drop-near-copies", is_flag=True, help="Drop (and replace) images closer to a training image than real new lesions are.")
@click.option("--train-data", default=None, metavar="NAME[:ROOT]",
              help="Training data for --drop-near-copies (default: the dataset recorded in the model).")
@click.option("--copy-quantile", default=0.01, show_default=True, type=float,
              help="Near-copy threshold: this quantile of real held-out lesions' distance to the training set.")
@click.option("--prefix", default="SYN", show_default=True, help="image_id prefix (ids are PREFIX_SEED_NNNNNNN).")
@click.option("--filter", "filter_", default=None, metavar="SCORES",
              help="Score and keep the best share per class: realism (the discriminator exported with --with-discriminator, "
                   "or --checkpoint), label, novelty; comma-separated.")
@click.option("--keep", type=float, default=None, help="With --filter: share of draws kept per class (draws n / keep) [0.5].")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The checkpoint the generator was exported from (its discriminator scores realism, for files "
                   "exported without --with-discriminator).")
@click.option("--overwrite", is_flag=True, help="Replace the images and metadata in a non-empty --out folder.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI for --model (default: MLFLOW_TRACKING_URI or mlruns/mlflow.db).")
def generate_command(onnx_path, model_uri, per_class, counts, out, seed, drop_near_copies, train_data, copy_quantile, prefix,
                     filter_, keep, checkpoint, overwrite, tracking_uri):
    """Write synthetic images as PNGs plus a HAM10000-style metadata.csv (reproducible by --seed)."""
    from augforge.runtime import RuntimeModelError

    if bool(onnx_path) == bool(model_uri):
        raise click.UsageError("give exactly one of --onnx FILE or --model models:/NAME@ALIAS")
    if (per_class is None) == (counts is None):
        raise click.UsageError("give exactly one of --per-class N or --counts mel=500,bcc=300")
    if train_data and not (drop_near_copies or filter_):
        raise click.UsageError("--train-data is used only with --drop-near-copies or --filter")
    if (keep is not None or checkpoint) and not filter_:
        raise click.UsageError("--keep and --checkpoint are used only with --filter realism,label,novelty")
    from augforge.evaluation.filtering import FilterError, parse_filters

    try:
        filters = parse_filters(filter_) if filter_ else ()
    except FilterError as exc:
        raise click.UsageError(str(exc)) from None
    if model_uri:
        from augforge.export import resolve_model

        resolved = resolve_model(model_uri, tracking_uri or None)
        path, registry = resolved.path, resolved.as_dict()
        click.echo(f"{model_uri} is version {resolved.version} (tracking store {resolved.tracking_uri})")
    else:
        path, registry = Path(onnx_path), None
    try:
        result = generate_images(
            path, out, counts=parse_counts(counts) if counts else None, per_class=per_class, seed=seed,
            drop_near_copies=drop_near_copies, train_data=train_data, copy_quantile=copy_quantile, prefix=prefix,
            overwrite=overwrite, source=model_uri or str(path), registry=registry, filters=filters,
            keep=0.5 if keep is None else keep, checkpoint=checkpoint,
        )
    except (RuntimeModelError, FilterError) as exc:
        raise AugforgeError(str(exc)) from None
    per = ", ".join(f"{k}={v}" for k, v in result.counts.items())
    click.echo(f"wrote {result.n_images} images ({per}) to {result.out / 'images'} in {result.seconds:.1f} s "
               f"({result.n_images / max(result.seconds, 1e-9):.0f} images/s)")
    if result.dropped and not filters:
        click.echo("dropped near-copies (replaced): " + ", ".join(f"{k}={v}" for k, v in result.dropped.items()))
    if filters:
        click.echo(f"filtered by {','.join(filters)}: kept the best {keep or 0.5:g} of the draws per class, near-copies "
                   f"dropped: " + ", ".join(f"{k}={v}" for k, v in result.dropped.items()) + " (scores in metadata.csv)")
    click.echo(f"metadata: {result.metadata_csv}")
