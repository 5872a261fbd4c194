"""``augforge sweep``."""

from __future__ import annotations

import shlex

import click

from augforge.config import parse_set
from augforge.sweep.space import DEFAULT_STORAGE
from augforge.sweep.run import run_sweep




@click.command("sweep")
@click.option("--dataset", default=None, help="Dataset plugin name (data.name; default: the preset's, else synthetic-lesions).")
@click.option("--model", default=None, help="Model family: generator and discriminator plugin name (default: the preset's, else sngan).")
@click.option("--preset", default="", help="Preset the trials start from (smoke, paper-a, paper-b, modern, ...).")
@click.option("--trials", default=20, show_default=True, type=int, help="Finished trials the study needs (all workers together).")
@click.option("--objective", default="kid", show_default=True, help="Evaluator (or its metric key) to optimise: kid, fid, detection-rate, ...")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage URL; postgresql://... for many workers.")
@click.option("--study", "study_name", default="", help="Study name (default DATASET-MODEL-OBJECTIVE); workers sharing it cooperate.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Fixed config override (not searched); repeatable.")
@click.option("--eval-every", type=int, default=None, help="Steps between in-training evaluations (what the pruner sees).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (one worker per GPU).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the TPE sampler.")
@click.option("--pruner", type=click.Choice(["median", "patient", "none"]), default="median", show_default=True,
              help="median: MedianPruner; patient: the same inside PatientPruner(patience=2), for noisy metrics.")
@click.option("--startup-trials", type=int, default=None, help="Trials before TPE and the pruner act (default: trials/3, 2..10).")
@click.option("--warmup-steps", type=int, default=None, help="No pruning before this step (default: 2 x eval-every).")
@click.option("--register-name", default="", help="Registered model name for the champion (default augforge-DATASET).")
@click.option("--no-register", is_flag=True, help="Do not export/register the best trial's generator.")
@click.option("--heartbeat", default=60, show_default=True, type=int, help="Seconds between trial heartbeats.")
@click.option("--grace", default=None, type=int, help="Seconds without heartbeat before a trial counts as dead (default 2 x heartbeat).")
@click.option("--tracking-uri", default="", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or mlruns/mlflow.db).")
def sweep_command(dataset, model, preset, trials, objective, storage, study_name, sets, eval_every, device, seed, pruner,
                  startup_trials, warmup_steps, register_name, no_register, heartbeat, grace, tracking_uri):
    """Optuna sweep: TPE + pruning; each trial is an MLflow run nested under the sweep's run."""
    result = run_sweep(
        dataset=dataset, model=model, preset=preset, trials=trials, objective=objective, storage=storage,
        study=study_name or None, overrides=parse_set(sets), eval_every=eval_every, device=device, seed=seed,
        pruner=pruner, startup_trials=startup_trials, warmup_steps=warmup_steps, register=not no_register,
        register_name=register_name or None, heartbeat=heartbeat, grace=grace, tracking_uri=tracking_uri or None,
        echo=click.echo,
    )
    c = result.counts
    click.echo(f"\nstudy {result.study_name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed")
    if result.best_trial is None:
        click.echo("no trial completed; nothing to register")
        return
    click.echo(f"best trial #{result.best_trial}: {result.objective}={result.best_value:.6g} ({result.direction})")
    click.echo("replay it with:\n  " + result.replay)
    storage_flag = "" if storage == DEFAULT_STORAGE else f" --storage {shlex.quote(result.storage)}"
    click.echo(f"  or: augforge train --from-trial {shlex.quote(result.study_name)}:{result.best_trial}{storage_flag}")
    if result.champion:
        click.echo(f"champion: {result.champion} (version {result.champion_version}); "
                   f"augforge generate --model {result.champion} --per-class 100 --out synthetic/")
    click.echo(f"MLflow: parent run {result.parent_run_id}; optuna-dashboard {shlex.quote(result.storage)}")
