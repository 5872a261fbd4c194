"""``augforge train``: presets, ``--set key=value`` overrides, resume, MLflow tracking.

Every convenience flag is an alias of one ``--set`` key (``--steps 50`` is
``--set train.steps=50``); giving both with different values is an error.
"""

from __future__ import annotations

import os
import sys

import click

from augforge.errors import ConfigError

#: flag -> the --set key it stands for
ALIASES = {
    "dataset": "data.name",
    "root": "dataset.root",
    "model": "model.generator",
    "image_size": "data.image_size",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "device": "train.device",
    "seed": "train.seed",
    "out_dir": "train.out_dir",
    "tracking_uri": "tracking.uri",
    "run_name": "tracking.run_name",
}


def build_config(preset: str, sets: tuple[str, ...], flags: dict, resume: str | None = None):
    """Resolve the run config: (checkpoint config | defaults + preset), then --set, then flags."""
    from augforge.config import RunConfig, apply_overrides, parse_set, resolve
    from augforge.envvars import check_image_size

    overrides = parse_set(sets)
    for name, key in ALIASES.items():
        value = flags.get(name)
        if value is None:
            continue
        if name == "device" and value == "":
            continue
        value = str(value)
        if key in overrides and overrides[key] != value:
            raise ConfigError(f"--{name.replace('_', '-')} {value} and --set {key}={overrides[key]} disagree; give one")
        overrides[key] = value
    classes = flags.get("classes")
    if classes:
        key = "dataset.classes"
        value = [c.strip() for c in classes.split(",") if c.strip()]
        if key in overrides:
            raise ConfigError("--classes and --set dataset.classes both given; give one")
        overrides[key] = value
    if resume:
        from augforge.checkpoint import load_latest
        from augforge.training.state import resolve_resume

        if preset:
            raise ConfigError("--resume continues a run with its own config; drop --preset (change keys with --set)")
        _, state = load_latest(resolve_resume(resume))
        cfg = apply_overrides(RunConfig.from_json_dict(state["config"]), overrides)
    else:
        cfg = resolve(preset, overrides)
    check_image_size(cfg.data.image_size)  # before a run folder exists
    return cfg


@click.command("train")
@click.option("--dataset", default=None, help="Dataset plugin name (data.name), e.g. synthetic-lesions, ham10000.")
@click.option("--root", default=None, help="Dataset folder (dataset.root).")
@click.option("--model", default=None, help="Model family (model.generator; the discriminator follows), e.g. sngan, dcgan, cdcgan.")
@click.option("--preset", default="", help="Named set-up: paper-a, paper-b, modern, smoke.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. --set train.lr_g=1e-4 (repeatable).")
@click.option("--classes", default=None, help="Comma-separated class names to keep (dataset.classes), e.g. mel,nv.")
@click.option("--image-size", type=int, default=None, help="Pixels, square (data.image_size).")
@click.option("--steps", type=int, default=None, help="Generator steps (train.steps).")
@click.option("--batch-size", type=int, default=None, help="Images per step per process (train.batch_size).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (train.device).")
@click.option("--seed", type=int, default=None, help="Seed of everything (train.seed).")
@click.option("--out-dir", default=None, help="Run folders go under it (train.out_dir, default runs/).")
@click.option("--run-name", default=None, help="Run folder and MLflow run name (tracking.run_name).")
@click.option("--resume", default=None, metavar="PATH|RUN_DIR", help="Continue a run exactly from its checkpoint.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (tracking.uri); default MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")
@click.option("--no-track", is_flag=True, help="Do not track the run in MLflow.")
@click.option("--dry-run", is_flag=True, help="Check every name and plugin key, print the resolved config as JSON and exit.")
@click.option("--from-trial", default=None, metavar="STUDY:NUMBER", help="Replay a sweep trial (its preset and parameters; --set on top).")
@click.option("--storage", default=None, help="Optuna storage of --from-trial (default sqlite:///mlruns/optuna.db).")
def train_command(preset, sets, resume, no_track, dry_run, from_trial, storage, **flags):
    """Train a GAN: resolve the config, write runs/<name>/config.json, train, track in MLflow.

    \b
    Examples:
      augforge train --preset smoke
      augforge train --dataset ham10000 --root ../shared/data/ham10000-200x150 --preset modern --image-size 64
      augforge train --resume runs/sngan-ham10000-20250101-120000 --set train.steps=4000
    """
    if from_trial:
        from augforge.sweep import from_trial_args

        preset, sets = from_trial_args(from_trial, storage, preset, sets)
    cfg = build_config(preset, sets, flags, resume)
    from augforge import registry

    # names and every plugin key, before any data is decoded; a new run also records every model
    # option at its default (a resumed run keeps the config its checkpoint holds)
    cfg = registry.validate_config(cfg, fill_defaults=resume is None)
    if dry_run:
        click.echo(cfg.to_json())
        return
    from augforge.tracking import NullTracker
    from augforge.training import train

    result = train(cfg, tracker=NullTracker() if no_track else None, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    lines = [
        f"{result.status}: step {result.step} in {result.run_dir}",
        f"  checkpoint   {result.checkpoint}",
    ]
    if result.best_checkpoint:
        lines.append(f"  best         {result.best_checkpoint}")
    if result.run_id:
        lines.append(f"  MLflow run   {result.run_id}  (mlflow ui --backend-store-uri {_ui_uri(cfg)})")
    shown = {k: v for k, v in result.metrics.items() if k in ("loss_d", "loss_g", "images_per_s") or k.startswith("best_")}
    if shown:
        lines.append("  " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    click.echo("\n".join(lines), err=True)
    if result.status == "KILLED":
        sys.exit(130)


def _ui_uri(cfg) -> str:
    from augforge.tracking import default_tracking_uri

    return cfg.tracking.uri or default_tracking_uri()
