"""What a finished study leaves in its parent run: Optuna's plots, the trials table, the registered champion."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path


from augforge.errors import AugforgeError
from augforge.sweep.storage import SweepResult
from augforge.sweep.storage import trial_counts


def log_plots(st, tracker, key: str) -> list[str]:
    """Optuna's plots (matplotlib backend) as PNGs, plus the trials table, on the parent run.

    Without matplotlib (the bare GPU machine of scripts/device-check.sh) there are no PNGs;
    the trials table (and HTML plots, with plotly) is still logged."""
    try:
        import matplotlib
    except ImportError:
        matplotlib = None


    if matplotlib is not None:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

    written = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        plots = {} if matplotlib is None else {
            "optimization_history": lambda: ovm.plot_optimization_history(st, target_name=key),
            "intermediate_values": lambda: ovm.plot_intermediate_values(st),
            "param_importances": lambda: ovm.plot_param_importances(st, evaluator=_importance_evaluator(), target_name=key),
            "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(st, target_name=key),
        }
        for plot, make in plots.items():
            try:
                ax = make()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(10, 6)
                fig.tight_layout()
                fig.savefig(tmp / f"{plot}.png", dpi=100)
                plt.close(fig)
                written.append(f"optuna/{plot}.png")
            except Exception as exc:  # e.g. importances need >= 2 completed trials with varied params
                (tmp / f"{plot}.txt").write_text(f"not drawn: {type(exc).__name__}: {exc}\n")
        html = _plotly_html(st, key, tmp)
        written += html
        try:
            st.trials_dataframe().to_csv(tmp / "trials.csv", index=False)
            written.append("optuna/trials.csv")
        except Exception:
            pass
        tracker.log_artifact(tmp, "optuna")
    tracker.log_metrics({"sweep_trials_" + s.lower(): float(n) for s, n in trial_counts(st).items() if n})
    try:
        tracker.log_metrics({f"best_{key}": float(st.best_value)})
    except ValueError:
        pass
    return written


def _importance_evaluator():
    """fANOVA with 16 trees instead of 64: 4x faster, and seeded (the same study, the same plot)."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)


def _plotly_html(st, key: str, tmp: Path) -> list[str]:
    """Interactive HTML versions when plotly happens to be installed (it is not a dependency)."""
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        return []
    import optuna.visualization as ov

    out = []
    plots = {"optimization_history": lambda: ov.plot_optimization_history(st, target_name=key),
             "parallel_coordinate": lambda: ov.plot_parallel_coordinate(st, target_name=key),
             "param_importances": lambda: ov.plot_param_importances(st, evaluator=_importance_evaluator(), target_name=key)}
    for plot, make in plots.items():
        try:
            make().write_html(tmp / f"{plot}.html", include_plotlyjs="cdn")
            out.append(f"optuna/{plot}.html")
        except Exception:
            pass
    return out


def register_champion(st, result: SweepResult, model_name: str, uri: str | None, echo) -> None:
    """Export the best trial's generator to ONNX and register it with alias ``champion``."""
    from augforge.export import DEFAULT_ALIAS, checkpoint_for_run, export_checkpoint, register_onnx

    best = st.best_trial
    registered = st.user_attrs.get("champion")
    if registered and json.loads(registered).get("trial") == best.number:
        info = json.loads(registered)
        result.champion, result.champion_version = f"models:/{model_name}@{DEFAULT_ALIAS}", info.get("version")
        return
    run_id = best.user_attrs.get("mlflow_run_id")
    try:
        ckpt = checkpoint_for_run(run_id, uri, best=True) if run_id else Path(best.user_attrs["checkpoint"])
    except AugforgeError:
        ckpt = Path(best.user_attrs.get("checkpoint", ""))
    out = Path(tempfile.mkdtemp(prefix="augforge-champion-")) / "generator.onnx"
    export_checkpoint(ckpt, out, extra={"optuna_study": result.study_name, "optuna_trial": best.number})
    mv = register_onnx(out, model_name, alias=DEFAULT_ALIAS, tracking_uri=uri, tags={
        "optuna.study": result.study_name, "optuna.trial_number": str(best.number),
        f"optuna.{result.objective}": repr(best.value), "augforge.trial_run_id": run_id or "",
    })
    st.set_user_attr("champion", json.dumps({"trial": best.number, "model": model_name, "version": mv.version}))
    result.champion, result.champion_version, result.onnx = f"models:/{model_name}@{DEFAULT_ALIAS}", mv.version, out
    echo(f"registered trial {best.number}'s generator as {model_name} version {mv.version} (alias @{DEFAULT_ALIAS})")
