"""``augforge turing create | serve | results``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from augforge.errors import ConfigError


@click.group("turing")
def turing_group():
    """Visual Turing test: clinicians judge real versus generated lesion images."""


def _classes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


@turing_group.command("create")
@click.option("--real", "real_dir", type=click.Path(exists=True, file_okay=False), help="Folder of real images (metadata CSV with image_id,dx, or class sub-folders).")
@click.option("--dataset", "dataset_name", help="Real images from this dataset plugin instead (see `augforge plugins`).")
@click.option("--root", "dataset_root", help="The dataset plugin's root folder or file (dataset.root).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Dataset config overrides, e.g. --set dataset.max_per_class=300.")
@click.option("--generated", "gen_dir", type=click.Path(exists=True, file_okay=False), help="Folder from `augforge generate` (metadata.csv + PNGs) or class sub-folders.")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False), help="Exported generator to sample the generated images from.")
@click.option("--per-class", type=click.IntRange(1), required=True, help="Real images per class, and as many generated.")
@click.option("--classes", multiple=True, help="Comma-separated classes (default: every class both sources have).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New study folder.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the picks, the shuffle and each rater's order.")
@click.option("--size", type=click.IntRange(16, 1024), default=None, help="Side in px of every study image [default: the smallest side among the picked images].")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None, help="Pass every image (both groups) through one JPEG at this quality first.")
@click.option("--title", default="Real or generated? Skin-lesion images", show_default=True)
def create_command(real_dir, dataset_name, dataset_root, overrides, gen_dir, onnx_path, per_class, classes, out, seed, size, jpeg_quality, title):
    """Build a blinded study: PER_CLASS real and PER_CLASS generated images of each class."""
    from augforge.turing import items as turing_items
    from augforge.turing import study as st

    if bool(real_dir) == bool(dataset_name):
        raise ConfigError("give the real images as exactly one of --real DIR or --dataset NAME [--root DIR]")
    if bool(gen_dir) == bool(onnx_path):
        raise ConfigError("give the generated images as exactly one of --generated DIR or --onnx FILE")
    if (dataset_root or overrides) and not dataset_name:
        raise ConfigError("--root and --set configure a dataset plugin: use them with --dataset NAME")
    if real_dir:
        real, real_desc = turing_items.folder_items(real_dir), f"folder {Path(real_dir).resolve()}"
    else:
        from augforge import config

        sets = config.parse_set(overrides)
        sets["data.name"] = dataset_name
        if dataset_root:
            sets["dataset.root"] = dataset_root
        cfg = config.resolve(overrides=sets)
        real = turing_items.dataset_items(cfg)
        real_desc = f"dataset {dataset_name} {json.dumps(cfg.dataset, sort_keys=True)}"
    if gen_dir:
        generated, gen_desc = turing_items.folder_items(gen_dir), f"folder {Path(gen_dir).resolve()}"
    else:
        generated = turing_items.onnx_items(onnx_path, per_class, seed, _classes(classes))
        gen_desc = f"onnx {Path(onnx_path).resolve()} (seed {seed})"
    created = st.create_study(
        out, real, generated, per_class=per_class, classes=_classes(classes), seed=seed, size=size,
        jpeg_quality=jpeg_quality, title=title, real_desc=real_desc, generated_desc=gen_desc,
        progress=lambda m: click.secho(m, fg="yellow", err=True),
    )
    click.echo(
        f"study {created.path}: {created.n_images} images ({', '.join(created.classes)}; "
        f"{per_class} real + {per_class} generated each), {created.size} px"
    )
    click.echo(f"admin token (shown once, stored hashed): {created.admin_token}")
    click.echo(f"serve it with: augforge turing serve {created.path}")


@turing_group.command("serve")
@click.argument("study", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for a LAN; put TLS in front for the internet).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--new-admin-token", is_flag=True, help="Replace the admin token and print the new one.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve_command(study, host, port, new_admin_token, access_log):
    """Serve STUDY to raters with uvicorn; answers go straight to STUDY/study.sqlite."""
    import uvicorn

    from augforge.turing.app import create_app

    app = create_app(study)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if new_admin_token:
        click.echo(f"new admin token (stored hashed; the old one no longer works): {app.state.study.rotate_token()}")
    click.echo(f"raters: {base}/    results: {base}/admin (admin token from `turing create`, or --new-admin-token)")
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=5)


@turing_group.command("results")
@click.argument("study", type=click.Path(exists=True, file_okay=False))
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write every answer, joined with the key, to this CSV.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full results as JSON.")
@click.option("--tracking-uri", default="", help="Log to this MLflow store [default: MLFLOW_TRACKING_URI when set, else no logging].")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow even when a store is configured.")
def results_command(study, csv_out, json_out, tracking_uri, no_track):
    """Print the results of STUDY; optionally export them and log them to MLflow."""
    from rich.console import Console
    from rich.table import Table

    from augforge.turing import results as rs
    from augforge.turing.study import Study

    s = Study(study)
    res = rs.compute(s)
    console = Console(width=120)
    console.print(f"[bold]{res['study']['title']}[/bold]  ({s.path})")
    console.print(
        f"{res['n_answers']} answers, {res['n_raters_answering']} raters ({res['n_raters_complete']} complete), "
        f"{res['study']['n_images']} images"
    )
    console.print(f"[bold]generated judged real:[/bold] {rs.headline(res)}   (paper A: 58.72%)")
    o, k = res["overall"], res["fleiss_kappa"]
    kappa = "–" if k["kappa"] is None else f"{k['kappa']:.3f}"
    console.print(
        f"accuracy {rs.pct(o['accuracy'])}, sensitivity {rs.pct(o['sensitivity'])}, specificity {rs.pct(o['specificity'])} "
        f"(positive = generated); mean rater accuracy {rs.pct(res['rater_accuracy']['mean'])}; "
        f"Fleiss' kappa {kappa} ({k['label']})"
    )
    for title, key, rows in (("per class", "class", res["per_class"]), ("per specialty", "specialty", res["per_specialty"])):
        t = Table(title=title)
        for col in (key, "n", "generated judged real [95% CI]", "accuracy", "sens.", "spec."):
            t.add_column(col)
        for r in rows:
            g = r["generated_judged_real"]
            t.add_row(str(r[key]), str(r["n"]), f"{rs.pct(g['share'])} [{rs.pct(g['wilson'][0])}–{rs.pct(g['wilson'][1])}]",
                      rs.pct(r["accuracy"]), rs.pct(r["sensitivity"]), rs.pct(r["specificity"]))
        console.print(t)
    if csv_out:
        n = rs.write_csv(s, csv_out)
        click.echo(f"wrote {n} answers to {csv_out}")
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2))
        click.echo(f"wrote {json_out}")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri and not no_track:
        run_id = rs.log_to_mlflow(s, res, uri)
        click.echo(f"logged to MLflow ({uri}), run {run_id}")
    elif not no_track:
        click.echo("not logged to MLflow: pass --tracking-uri or set MLFLOW_TRACKING_URI")


if __name__ == "__main__":  # `python -m augforge.turing.cli` skips plugin loading (fast start)
    turing_group()
