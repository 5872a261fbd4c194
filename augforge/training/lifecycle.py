"""A run's start and end around the loop: its folder, its tracked run, the lifecycle hooks, and
what is logged and printed when it ends."""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass, field
from pathlib import Path


from augforge import plugins, registry
from augforge.config import RunConfig
from augforge.runs import create_run_dir, record_run_id, source_tags, write_text_atomic
from augforge.training.budget import stop_detail


@dataclass
class RunInfo:
    """What lifecycle hooks see of a run (``augforge_run_start`` / ``epoch_end`` / ``run_end``)."""

    config: RunConfig
    run_dir: Path
    run_id: str | None
    class_names: list[str]


@dataclass
class TrainResult:
    status: str  # FINISHED | KILLED | FAILED
    step: int
    epoch: int
    run_dir: Path
    run_id: str | None
    checkpoint: Path | None  # checkpoints/last.pt
    best_checkpoint: Path | None = None  # checkpoints/best.pt (by the in-training evaluator)
    metrics: dict[str, float] = field(default_factory=dict)


def start_run(cfg: RunConfig, tracker, dist, device, run_dir: Path, run_id: str | None, nested: bool, class_names,
              resumed_at: int | None):
    """Start (or reopen) the tracked run, log config.json / splits.csv, call ``augforge_run_start``.

    Returns ``(tracker, run_id, info)``; ranks other than 0 get a ``NullTracker``.
    """
    from augforge.tracking import NullTracker, code_version, make_tracker

    if not dist.main:
        tracker = NullTracker()
    elif tracker is None:
        tracker = make_tracker(True, cfg.tracking.uri, cfg.tracking.experiment)
    tags = {"dataset": cfg.data.name, "model": cfg.model.generator, "discriminator": cfg.discriminator_name,
            "preset": cfg.preset or "(none)", "run_dir": str(run_dir.resolve()), "device": str(device),
            "world_size": str(dist.world), **code_version()}
    start_tracker(tracker, cfg, run_id, nested, tags, resumed_at=resumed_at)
    run_id = dist.broadcast(tracker.run_id if dist.main else None)
    for artifact in ("config.json", "splits.csv"):
        if (run_dir / artifact).exists():
            tracker.log_artifact(run_dir / artifact)
    info = RunInfo(config=cfg, run_dir=run_dir, run_id=run_id, class_names=class_names)
    if dist.main:
        call_hook("augforge_run_start", run=info)
    return tracker, run_id, info


def call_hook(name: str, **kwargs) -> None:
    getattr(plugins.get_plugin_manager().hook, name)(**kwargs)


def metric_direction(metric: str) -> str:
    """minimize | maximize for an evaluator objective (the evaluator says; else by its name)."""
    for entry in registry.tables()["evaluator"].values():
        if getattr(entry.cls, "objective", None) == metric:
            return getattr(entry.cls, "direction", "minimize")
    return "maximize" if metric in ("precision", "recall", "density", "coverage", "accuracy", "auc") else "minimize"


def new_run_dir(cfg: RunConfig) -> Path:
    """``train.out_dir/<run name>``, created exclusively: concurrent runs never share a folder."""
    name = cfg.tracking.run_name or f"{cfg.model.generator}-{cfg.data.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    return create_run_dir(Path(cfg.train.out_dir) / name)


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.json", cfg.to_json() + "\n")  # a crash leaves the old one or the new


def start_tracker(tracker, cfg: RunConfig, run_id: str | None, nested: bool, tags: dict, resumed_at: int | None) -> None:
    """Start (or, on resume, reopen) the tracked run and log params + tags."""
    run_dir = Path(tags["run_dir"])
    tags = {**tags, **source_tags(run_dir)}  # a resumed copy links to the run it came from
    started = False
    if run_id:
        try:
            tracker.start(run_name=cfg.tracking.run_name, tags=None, nested=nested, run_id=run_id)
            started = True
        except Exception as exc:  # the store does not know the run (another --tracking-uri): new run
            print(f"warning: cannot reopen tracked run {run_id} ({type(exc).__name__}); starting a new one", file=sys.stderr)
    if not started:
        tracker.start(run_name=cfg.tracking.run_name, tags=tags, nested=nested)
    if tracker.run_id:
        record_run_id(run_dir, tracker.run_id)
    params = cfg.flat()
    if resumed_at is None:
        tracker.log_params(params)
    else:
        tracker.set_tags({**tags, "resumed_at_step": str(resumed_at)})
        for k, v in params.items():  # params already logged cannot change in MLflow
            try:
                tracker.log_params({k: v})
            except Exception:
                tracker.set_tags({f"resume.{k}": str(v)})



def end_report(tracker, *, run_dir: Path, info: RunInfo, result: TrainResult, stop_reason, signal_name, error,
               t, seconds: float, best: dict) -> None:
    """Tags, the tracked run's status, the ``augforge_run_end`` hook, and how to continue."""
    detail = stop_detail(stop_reason, result.step, t, seconds, best)
    tracker.set_tags({"stop_reason": str(stop_reason), "stop_detail": detail})
    tracker.end(result.status)
    call_hook("augforge_run_end", run=info, result=result)
    if stop_reason == "budget":
        print(f"\n{detail}. Continue with: augforge train --resume {run_dir} --set train.max_minutes=<more>", file=sys.stderr)
    if signal_name and error is None:
        print(f"\n{signal_name}: stopped at step {result.step}; checkpoint {result.checkpoint}. "
              f"Continue with: augforge train --resume {run_dir}", file=sys.stderr)
