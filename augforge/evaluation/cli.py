"""``augforge evaluate``: run evaluator plugins on a checkpoint, a tracked run or an ONNX file."""

from __future__ import annotations

import click

from augforge.errors import ConfigError


@click.command("evaluate")
@click.option("--run", "run_id", default=None, help="MLflow run id of an `augforge train` run (its last checkpoint).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A checkpoint .pt file.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="An exported ONNX generator.")
@click.option("--best", is_flag=True, help="With --run: its best checkpoint (kept by train.eval_every) instead of the last.")
@click.option("--metrics", default="", help="Comma-separated evaluator names (default: every cheap one; list: `augforge plugins`).")
@click.option("--n-per-class", type=int, default=100, show_default=True, help="Generated images per class.")
@click.option("--classifier", default="paper-b-cnn", show_default=True, help="Detector plugin (paper-b-cnn, resnet).")
@click.option("--jpeg-quality", type=int, default=None, help="JPEG-compress generated images like the real data (e.g. 75).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Report folder (default: next to the checkpoint).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: the run's own, or mlruns/).")
@click.option("--set", "sets", multiple=True, metavar="EVALUATOR.KEY=VALUE",
              help="Evaluator constructor option, repeatable, e.g. --set augmentation-gain.epochs=4 (keys: `augforge plugins show NAME`).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="Local TorchScript Inception-v3 (e.g. NVIDIA's inception-2015-12-05.pt): adds fid_inception/kid_inception.")
@click.option("--filter", "filter_", default=None, metavar="SCORES",
              help="Evaluate filtered samples, as `augforge generate --filter` writes them: realism (a checkpoint, or ONNX exported --with-discriminator), label, novelty.")
@click.option("--keep", type=float, default=0.5, show_default=True, help="With --filter: share of draws kept per class.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Real held-out lesions to compare against: test to report, val to choose among generators.")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
def evaluate_command(run_id, checkpoint, onnx_path, best, metrics, n_per_class, classifier, jpeg_quality, seed, device, out_dir,
                     tracking_uri, sets, inception_weights, filter_, keep, split, no_track):
    """Evaluate a generator: detector detection rate, FID/KID, precision/recall, c2st, memorisation.

    Uses the checkpoint's own dataset, classes, image size and lesion-grouped split, trains
    (once, then cached) the detector on the real train split, writes a Markdown report with
    PNG figures and prints its path.
    """
    from augforge import evaluation as evaluate
    from augforge.evaluation.filtering import parse_filters

    given = [x for x in (run_id, checkpoint, onnx_path) if x]
    if len(given) != 1:
        raise ConfigError("give exactly one of --run RUN_ID, --checkpoint PATH or --onnx PATH")
    names = [m.strip() for m in metrics.split(",") if m.strip()] or None
    common = dict(metrics=names, n_per_class=n_per_class, seed=seed, jpeg_quality=jpeg_quality, classifier=classifier,
                  device=device, out_dir=out_dir, track=not no_track, tracking_uri=tracking_uri, echo=click.echo,
                  options=evaluate.parse_evaluator_options(sets), inception_weights=inception_weights,
                  filters=parse_filters(filter_) if filter_ else (), keep=keep, split=split)
    if onnx_path:
        result = evaluate.evaluate_onnx_full(onnx_path, **common)
    else:
        if run_id:
            from augforge.runs import run_checkpoint

            checkpoint = run_checkpoint(run_id, tracking_uri=tracking_uri, best=best)
        result = evaluate.evaluate_checkpoint_full(checkpoint, **common)
    keys = [k for k in ("detection_rate", "fid", "fid_inception", "kid", "kid_inception", "precision", "recall", "density", "coverage", "c2st_accuracy",
                        "memorization", "augmentation_gain") if k in result.metrics]
    for k in keys:
        click.echo(f"{k:>20s}: {result.metrics[k]:.4g}")
    if result.run_id:
        click.echo(f"logged to MLflow run {result.run_id}")
    click.echo(f"report: {result.report}")
