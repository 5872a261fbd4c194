"""Optuna hyperparameter sweeps: every trial is one ``augforge.training.train`` call.

- Search space: the core's training keys (``CORE_SPACE``) plus each plugin's
  ``search_space(trial)``, prefixed ``generator.`` / ``discriminator.``. Trial parameter names
  are exactly the dotted ``--set`` keys, so any trial replays as ``augforge train --set ...``
  or ``augforge train --from-trial STUDY:NUMBER``. Keys given with ``--set`` are fixed, not searched.
- TPE sampler (seeded) and a median pruner (optionally patience-wrapped) on the objective that
  ``train`` reports every ``train.eval_every`` steps. A trial's value is the best value its
  in-training evaluations reached: the value of the checkpoint (``best.pt``) it would hand on.
- Failed trials (NaN loss, crash) are recorded as FAIL and the study goes on.
- Storage: Optuna's RDB storage (default ``sqlite:///mlruns/optuna.db``; PostgreSQL for many
  workers on many machines, all running the same command). Heartbeats fail the trials of dead
  workers after a grace period and ``RetryHeartbeatStaleTrialCallback`` queues them again.
  ``--trials N`` is the study's total: workers stop once N trials have finished (complete,
  pruned or failed) and no retry is waiting or trial running.
- Tracking: one parent MLflow run per study; each trial is a run nested under it. The parent
  holds the Optuna plots, the trials table and the champion: the best trial's generator
  exported to ONNX and registered (alias ``champion``).

    space.py    the search space and the objective
    storage.py  Optuna's storage, heartbeats, retries, the result
    run.py      ``run_sweep``: the study, the parent run, nested trial runs
    report.py   plots, trials table, the registered champion
    replay.py   a trial as a training command (``--from-trial``)
    cli.py      ``augforge sweep``
"""

from augforge.sweep.replay import from_trial_args, parse_trial_ref, replay_command, trial_config
from augforge.sweep.run import TrialTracker, run_sweep
from augforge.sweep.space import BASE_ATTR, CORE_SPACE, DEFAULT_STORAGE, PARENT_ATTR, PrefixedTrial, objective_spec, suggest
from augforge.sweep.storage import SweepResult, make_storage

__all__ = [
    "BASE_ATTR", "CORE_SPACE", "DEFAULT_STORAGE", "PARENT_ATTR", "PrefixedTrial", "SweepResult", "TrialTracker",
    "from_trial_args", "make_storage", "objective_spec", "parse_trial_ref", "replay_command", "run_sweep", "suggest",
    "trial_config",
]
