"""``report.md`` of ``augforge.device.check``: the JSON report as tables a reviewer reads first."""

from __future__ import annotations

import json


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _throughput(cells: list[dict]) -> list[str]:
    """Rows model x size, columns the modes: img/s (data-wait share in brackets)."""
    modes = list(dict.fromkeys(c["mode"] for c in cells))
    keys = list(dict.fromkeys((c["model"], c["image_size"]) for c in cells))
    by = {(c["model"], c["image_size"], c["mode"]): c for c in cells}
    rows = []
    for model, size in keys:
        row = [model, size]
        for mode in modes:
            c = by.get((model, size, mode), {})
            if "img_per_s" in c:
                v = c["img_per_s"]
                row.append(f"{v:,.0f} ({100 * c['data_wait_share']:.1f} %)" if v >= 100 else f"{v:.3g} ({100 * c['data_wait_share']:.1f} %)")
            else:
                row.append(("error: " + c["error"][:60]) if "error" in c else c.get("skipped", "-"))
        rows.append(row)
    return _table(["model", "px", *modes], rows)


def markdown(report: dict) -> str:
    env = report.get("env", {})
    gpu = env.get("gpu", {})
    out = ["# augforge device check", ""]
    out.append(f"- device: {env.get('device', '?')} {gpu.get('name', '')} {gpu.get('memory_gib', '')}"
               f"{' GiB' if gpu else ''}; torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, "
               f"python {env.get('python', '?')}, {env.get('cpu_count', '?')} CPUs")
    out.append(f"- arguments: {json.dumps(report.get('args', {}))}")
    if env.get("data"):
        out.append(f"- data: {json.dumps(env['data'])}")
    if env.get("plugins"):
        out.append(f"- plugins from: {env['plugins']['source']}")
    for name, how in (env.get("missing") or {}).items():
        out.append(f"- missing `{name}`: {how}")
    out += ["", "## Stages", ""]
    rows = []
    for name, s in report.get("stages", {}).items():
        detail = s.get("error") or s.get("reason") or ""
        rows.append([name, s.get("status"), s.get("seconds", ""), s.get("cap_s", ""), str(detail)[:120]])
    out += _table(["stage", "status", "s", "cap s", "note"], rows)
    train = report.get("stages", {}).get("train", {})
    if "step" in train:
        best = train.get("best") or {}
        out += ["", "## modern run", "",
                f"- reached step {train['step']} (epoch {train['epoch']}) in {train['seconds']} s"
                f"{', stopped by the wall-time guard' if train.get('stopped_by_guard') else ''}",
                f"- best {best.get('metric')} = {best.get('value')} at step {best.get('step')} (best.pt)",
                f"- last logged: {json.dumps({k: round(v, 4) for k, v in train.get('last_logged', {}).items()})}",
                f"- command: `{train.get('command', '')}`"]
    if report.get("throughput"):
        out += ["", "## Throughput: img/s of a G+D step (share of time fetching data)", ""]
        out += _throughput(report["throughput"])
    for name in ("resume", "ddp", "sweep"):
        s = report.get("stages", {}).get(name)
        if s:
            shown = {k: v for k, v in s.items() if k not in ("traceback", "seconds", "cap_s")}
            out += ["", f"## {name}", "", "```", json.dumps(shown, indent=1, default=str), "```"]
    out += ["", "## Files", ""] + [f"- {n}: {v}" for n, v in report.get("files", {}).items()]
    return "\n".join(out) + "\n"
