"""Turing-test results from a study's database: one dict (JSON-able), a CSV export, MLflow.

The positive class is *generated* (see ``augforge.turing.stats``); paper A's headline number
is ``generated_judged_real.share`` = 1 - sensitivity.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.turing import stats
from augforge.turing.study import Study

CSV_COLUMNS = [
    "rater", "specialty", "years", "image", "origin", "class", "answer", "confidence", "correct",
    "position", "elapsed_ms", "created_at",
]


def answers_frame(study: Study) -> pd.DataFrame:
    """Every answer joined with the key and the rater's profile, in answer order."""
    rows = study.con.execute(
        "SELECT a.rater, r.specialty, r.years, a.image, i.origin, i.class, a.answer, a.confidence,"
        " a.answer = i.origin AS correct, a.position, a.elapsed_ms, a.created_at"
        " FROM answers a JOIN images i ON i.id = a.image JOIN raters r ON r.id = a.rater ORDER BY a.id"
    ).fetchall()
    df = pd.DataFrame([tuple(r) for r in rows], columns=CSV_COLUMNS)
    df["correct"] = df["correct"].astype(bool)
    return df


def write_csv(study: Study, out) -> int:
    """Write the answers CSV to a path or a text stream; returns the number of rows."""
    df = answers_frame(study)
    df.to_csv(out, index=False)
    return len(df)


def csv_text(study: Study) -> str:
    buf = io.StringIO()
    write_csv(study, buf)
    return buf.getvalue()


def _num(x):
    """nan -> None so the dict is valid JSON."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _proportion(k: int, n: int, confidence: float) -> dict:
    return {
        "k": int(k),
        "n": int(n),
        "share": _num(k / n if n else math.nan),
        "wilson": [_num(v) for v in stats.wilson_interval(int(k), int(n), confidence)],
        "clopper_pearson": [_num(v) for v in stats.clopper_pearson_interval(int(k), int(n), confidence)],
    }


def summarise(df: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Confusion rates and the headline share for any subset of answers."""
    gen = df["origin"] == "generated"
    said_gen = df["answer"] == "generated"
    c = stats.confusion(gen.to_numpy(), said_gen.to_numpy())
    return {
        "n": int(len(df)),
        "accuracy": _num(stats.accuracy(c)),
        "sensitivity": _num(stats.sensitivity(c)),
        "specificity": _num(stats.specificity(c)),
        "confusion": c.as_dict(),
        "generated_judged_real": _proportion(c.fn, c.tp + c.fn, confidence),
        "real_judged_real": _proportion(c.tn, c.tn + c.fp, confidence),
    }


def compute(study: Study, confidence: float = 0.95) -> dict:
    """Everything the results page, the CLI, the CSV and MLflow show, as one JSON-able dict."""
    df = answers_frame(study)
    images = pd.DataFrame(
        [tuple(r) for r in study.con.execute("SELECT id, origin, class FROM images ORDER BY id")],
        columns=["image", "origin", "class"],
    )
    raters = pd.DataFrame(
        [tuple(r) for r in study.con.execute("SELECT id, specialty, years FROM raters ORDER BY id")],
        columns=["rater", "specialty", "years"],
    )
    meta = study.meta
    out: dict = {
        "study": {
            "title": meta["title"],
            "path": str(study.path),
            "seed": int(meta["seed"]),
            "size": int(meta["size"]),
            "format": meta["format"],
            "jpeg_quality": meta["jpeg_quality"] or None,
            "per_class": int(meta["per_class"]),
            "classes": json.loads(meta["classes"]),
            "real_source": meta["real_source"],
            "generated_source": meta["generated_source"],
            "created_at": meta["created_at"],
            "n_images": int(len(images)),
            "n_real": int((images["origin"] == "real").sum()),
            "n_generated": int((images["origin"] == "generated").sum()),
        },
        "confidence_level": confidence,
        "positive_class": "generated",
        "n_raters": int(len(raters)),
        "n_raters_answering": int(df["rater"].nunique()),
        "n_raters_complete": int((df.groupby("rater").size() == len(images)).sum()) if len(df) else 0,
        "n_answers": int(len(df)),
    }
    out["overall"] = summarise(df, confidence)
    # Answers of one rater are correlated: add an interval that resamples raters, not answers.
    g = df[df["origin"] == "generated"]
    per_rater = g.groupby("rater")["answer"].agg(k=lambda s: int((s == "real").sum()), n="size")
    out["overall"]["generated_judged_real"]["rater_bootstrap"] = [
        _num(v) for v in stats.cluster_bootstrap_interval(per_rater["k"], per_rater["n"], confidence)
    ]

    rater_rows = []
    for rid, sub in df.groupby("rater", sort=True):
        s = summarise(sub, confidence)
        prof = raters.set_index("rater").loc[rid]
        rater_rows.append({
            "rater": rid,
            "specialty": prof["specialty"],
            "years": float(prof["years"]),
            "n": s["n"],
            "accuracy": s["accuracy"],
            "sensitivity": s["sensitivity"],
            "specificity": s["specificity"],
            "generated_judged_real": s["generated_judged_real"]["share"],
            "mean_confidence": float(sub["confidence"].mean()),
        })
    out["raters"] = rater_rows
    accs = np.array([r["accuracy"] for r in rater_rows if r["accuracy"] is not None], dtype=float)
    out["rater_accuracy"] = {
        "n_raters": int(len(accs)),
        "mean": _num(accs.mean()) if len(accs) else None,
        "median": _num(np.median(accs)) if len(accs) else None,
        "min": _num(accs.min()) if len(accs) else None,
        "max": _num(accs.max()) if len(accs) else None,
    }
    out["per_class"] = [{"class": c, **summarise(df[df["class"] == c], confidence)} for c in out["study"]["classes"]]
    out["per_specialty"] = [
        {"specialty": sp, "n_raters": int(sub["rater"].nunique()), **summarise(sub, confidence)}
        for sp, sub in df.groupby("specialty", sort=True)
    ]
    out["by_confidence"] = [
        {"confidence": int(cf), "n": int(len(sub)), "accuracy": _num(sub["correct"].mean())}
        for cf, sub in df.groupby("confidence", sort=True)
    ]

    # Inter-rater agreement: images x {real, generated} counts.
    counts = df.pivot_table(index="image", columns="answer", values="rater", aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=["real", "generated"], fill_value=0)
    kappa = stats.fleiss_kappa(counts.to_numpy()) if len(counts) else math.nan
    out["fleiss_kappa"] = {
        "kappa": _num(kappa),
        "label": stats.kappa_label(kappa),
        "n_images": int((counts.sum(axis=1) >= 2).sum()),
        "categories": ["real", "generated"],
    }

    # Per-image realness: share of its raters who called it real.
    per_image = images.set_index("image").join(counts, how="left").fillna({"real": 0, "generated": 0})
    mean_conf = df.groupby("image")["confidence"].mean()
    rows = []
    for image, r in per_image.iterrows():
        n = int(r["real"] + r["generated"])
        rows.append({
            "image": image,
            "origin": r["origin"],
            "class": r["class"],
            "n": n,
            "judged_real": int(r["real"]),
            "realness": _num(r["real"] / n) if n else None,
            "mean_confidence": _num(mean_conf.get(image, math.nan)),
        })
    rows.sort(key=lambda x: (-1 if x["realness"] is None else x["realness"], x["n"]), reverse=True)
    out["images"] = rows
    return out


def flat_metrics(res: dict) -> dict[str, float]:
    """The numbers worth a metric in MLflow (dotted names; None dropped)."""
    o = res["overall"]
    m = {
        "generated_judged_real": o["generated_judged_real"]["share"],
        "generated_judged_real_wilson_lo": o["generated_judged_real"]["wilson"][0],
        "generated_judged_real_wilson_hi": o["generated_judged_real"]["wilson"][1],
        "generated_judged_real_rater_bootstrap_lo": o["generated_judged_real"]["rater_bootstrap"][0],
        "generated_judged_real_rater_bootstrap_hi": o["generated_judged_real"]["rater_bootstrap"][1],
        "real_judged_real": o["real_judged_real"]["share"],
        "accuracy": o["accuracy"],
        "sensitivity": o["sensitivity"],
        "specificity": o["specificity"],
        "rater_accuracy_mean": res["rater_accuracy"]["mean"],
        "fleiss_kappa": res["fleiss_kappa"]["kappa"],
        "n_answers": res["n_answers"],
        "n_raters": res["n_raters_answering"],
    }
    for c in res["per_class"]:
        m[f"class.{c['class']}.generated_judged_real"] = c["generated_judged_real"]["share"]
        m[f"class.{c['class']}.accuracy"] = c["accuracy"]
    return {k: float(v) for k, v in m.items() if v is not None}


def log_to_mlflow(study: Study, res: dict, uri: str, experiment: str = "augforge-turing") -> str:
    """One MLflow run with the study parameters, the metrics and results.json + answers.csv."""
    from augforge.tracking import make_tracker

    tracker = make_tracker(True, uri=uri, experiment=experiment)
    s = res["study"]
    tracker.start(run_name=f"turing-{Path(s['path']).name}", tags={"augforge.command": "turing results"})
    try:
        tracker.log_params({
            "study.path": s["path"], "study.seed": s["seed"], "study.size": s["size"],
            "study.per_class": s["per_class"], "study.classes": ",".join(s["classes"]),
            "study.jpeg_quality": s["jpeg_quality"], "study.real_source": s["real_source"],
            "study.generated_source": s["generated_source"], "study.n_images": s["n_images"],
        })
        tracker.log_metrics(flat_metrics(res))
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "turing_results.json").write_text(json.dumps(res, indent=2))
            write_csv(study, Path(tmp, "turing_answers.csv"))
            tracker.log_artifact(tmp, "turing")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return tracker.run_id


def pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def headline(res: dict) -> str:
    """One sentence with paper A's figure, its intervals and n."""
    g = res["overall"]["generated_judged_real"]
    if not g["n"]:
        return "no answers on generated images yet"
    lo, hi = g["wilson"]
    blo, bhi = g.get("rater_bootstrap", [None, None])
    s = (
        f"{pct(g['share'])} of answers on generated images said 'real' ({g['k']}/{g['n']}; "
        f"{int(100 * res['confidence_level'])}% CI {pct(lo)}–{pct(hi)} Wilson"
    )
    if blo is not None:
        s += f", {pct(blo)}–{pct(bhi)} resampling raters"
    return s + ")"
