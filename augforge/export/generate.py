"""``augforge generate``: synthetic lesion images as PNGs plus a HAM10000-style ``metadata.csv``.

The output folder reads like HAM10000, so code written for it consumes synthetic images
unchanged::

    OUT/metadata.csv        lesion_id, image_id, dx, dx_type, age, sex, localization
    OUT/images/<image_id>.png
    OUT/generation.json     what made them: source model (for models:/ the version it resolved
                            to and the tracking store), seed, counts, dropped near-copies

With ``--filter realism,label,novelty --keep 0.5`` each class is drawn ceil(n / keep) times,
scored (``augforge.evaluation.filtering``), and the best n kept; ``metadata.csv`` gains ``score_*``
columns (the scores used and ``score_rank``, the combined within-class percentile rank).

``dx_type`` is ``synthetic``; ``age`` is empty and ``sex``/``localization`` are ``unknown``
(HAM10000's own value for a missing field). Every image is its own lesion. The j-th image of
class k is drawn from noise seeded ``(seed, k, j)`` (``augforge.runtime.OnnxGenerator.render``),
so the same seed writes byte-identical files, and images equal ``SyntheticLesions(..., seed)``'s.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from augforge.errors import AugforgeError

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
MAX_ROUNDS = 10  # rounds of replacement draws for dropped near-copies before giving up
BLOCK = 1024  # images rendered, checked and written together (bounds memory at any resolution)


@dataclass
class GenerateResult:
    out: Path
    metadata_csv: Path
    counts: dict[str, int]
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())


def parse_counts(text: str) -> dict[str, int]:
    """``"mel=500,bcc=300"`` -> ``{"mel": 500, "bcc": 300}`` (names are checked later)."""
    counts: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, n = item.partition("=")
        name = name.strip()
        if not sep or not name or not n.strip().isdigit():
            raise AugforgeError(f"--counts item {item!r}: expected CLASS=N, e.g. --counts mel=500,bcc=300")
        if name in counts:
            raise AugforgeError(f"--counts names {name!r} twice")
        counts[name] = int(n)
    if not counts:
        raise AugforgeError("--counts is empty; e.g. --counts mel=500,bcc=300")
    return counts


def _training_config(onnx_path: Path, metadata: dict[str, str], train_data: str | None):
    """The run config of the generator's training data (``train_data``: NAME[:ROOT] when it moved)."""
    from augforge.config import apply_overrides
    from augforge.evaluation import onnx_config

    cfg, _ = onnx_config(onnx_path, metadata)
    if train_data:  # NAME[:ROOT] -- another copy or location of the training data
        name, _, root = train_data.partition(":")
        over = {"data.name": name}
        if root:
            over["dataset.root"] = root
        cfg = apply_overrides(cfg, over)
    size = int(metadata["image_size"])
    if cfg.data.image_size != size:
        cfg = apply_overrides(cfg, {"data.image_size": size})
    return cfg


def _near_copy_check(onnx_path: Path, metadata: dict[str, str], train_data: str | None, quantile: float):
    """``fn(images) -> bool mask`` flagging near-copies of the generator's training images."""
    from augforge.evaluation import near_copy_mask_for

    cfg = _training_config(onnx_path, metadata, train_data)
    return lambda images: np.asarray(near_copy_mask_for(cfg, images, quantile=quantile), bool)


def _scorer(onnx_path: Path, gen, filters: tuple[str, ...], train_data: str | None, quantile: float, checkpoint, drop_near_copies: bool):
    """``fn(images, class name, model label) -> (scores dict, near-copy mask)`` for ``--filter``.

    realism: the discriminator of ``checkpoint``, else the ONNX discriminator exported beside the
    generator (``--with-discriminator``); label: the cached detector of the training data; novelty: the distance to the
    nearest training image. Near-copies are flagged when novelty is a filter or with
    ``--drop-near-copies``.
    """
    from augforge.evaluation import filtering
    from augforge.evaluation import get_detector, load_data, split_sets

    cfg = _training_config(onnx_path, gen.metadata, train_data)
    disc = None
    if "realism" in filters:
        if checkpoint:
            if not Path(checkpoint).is_file():
                raise AugforgeError(f"--checkpoint {checkpoint} does not exist (the augforge checkpoint {onnx_path.name} was exported from)")
            disc = _discriminator(Path(checkpoint), gen.image_size)
        elif gen.metadata.get("discriminator_file"):
            from augforge.runtime import discriminator_for

            disc = discriminator_for(gen)  # the ONNX discriminator beside it: the runtime's realism, exactly
        else:
            raise AugforgeError(f"realism filtering needs the discriminator: {onnx_path.name} was exported without one; "
                                "re-export with `augforge export --with-discriminator`, or pass --checkpoint FILE "
                                "(the augforge checkpoint it was exported from)")
    check = "novelty" in filters or drop_near_copies
    arrays, splits = load_data(cfg) if check or "label" in filters else (None, None)  # realism alone needs no data
    names = list(arrays.class_names) if arrays is not None else []
    detector = get_detector(cfg, arrays, splits, device="cpu") if "label" in filters else None
    sets = split_sets(arrays, splits, ("train", "test")) if check else {}
    # the near-copy threshold once, from real held-out lesions
    threshold = filtering.near_copy_threshold(sets["train"], sets["test"], quantile) if check else None

    def score(images, name: str, label: int):
        if detector is not None and name not in names:
            raise AugforgeError(f"label filtering: class {name!r} is not in the detector's classes {names}")
        return filtering.score_images(
            images, filters, device="cpu", model_labels=np.full(len(images), label), discriminator=disc, detector=detector,
            detector_labels=np.full(len(images), names.index(name)) if detector is not None else None,
            train=sets.get("train"), threshold=threshold, near_copies=check)

    return score


def _discriminator(path: Path, image_size: int):
    from augforge.checkpoint import load_checkpoint, load_discriminator

    state = load_checkpoint(path)
    if int(state.get("image_size", image_size)) != image_size:
        raise AugforgeError(f"{path} is a {state.get('image_size')} px model, the generator makes {image_size} px images")
    return load_discriminator(state)


def _filtered_draws(gen, score, seed: int, name: str, label: int, n: int, keep: float):
    """Draw ceil(n / keep) images, score them, keep the best n (near-copies dropped; more draws
    when too few remain). Returns ``(images, scores table, near-copies dropped)``."""
    import pandas as pd

    from augforge.evaluation.filtering import select

    m = math.ceil(n / keep)
    images, cols, copies = [], [], []
    for rounds in range(1, MAX_ROUNDS + 1):
        ords = np.arange((rounds - 1) * m, rounds * m)
        batch = gen.render(seed, np.full(m, label), ords)
        scores, flags = score(batch, name, label)
        images.append(batch)
        cols.append(pd.DataFrame({f"score_{k}": v for k, v in scores.items()}, index=ords))
        copies.append(np.zeros(m, bool) if flags is None else flags)
        table, near = pd.concat(cols), np.concatenate(copies)
        sel = select(np.zeros(len(table), int), {k[6:]: table[k].to_numpy() for k in table.columns}, counts={0: n},
                     near_copy=near, seed=seed)
        if not sel.shortfall:
            table = table.assign(score_rank=sel.combined).iloc[sel.indices]
            return np.concatenate(images)[sel.indices], table.reset_index(drop=True), int(near.sum())
    raise AugforgeError(f"class {name}: {int(near.sum())} of {len(near)} draws were near-copies of training images after "
                        f"{MAX_ROUNDS} rounds; the generator memorises this class — do not use it, or lower --copy-quantile")


def generate_images(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    counts: dict[str, int] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    drop_near_copies: bool = False,
    train_data: str | None = None,
    copy_quantile: float = 0.01,
    prefix: str = "SYN",
    overwrite: bool = False,
    progress: bool = True,
    threads: int | None = None,
    source: str | None = None,
    registry: dict | None = None,
    filters: tuple[str, ...] = (),
    keep: float = 1.0,
    checkpoint: str | os.PathLike | None = None,
) -> GenerateResult:
    """Write the images and ``metadata.csv``; see the module docstring for the layout.

    ``registry``: what a ``models:/`` source resolved to (``ResolvedModel.as_dict()``), recorded
    in ``generation.json`` so the images name the exact model version behind an alias.
    ``filters`` (``augforge.evaluation.filtering.SCORES``): draw ceil(n / ``keep``) images per class, keep
    the best n by their combined rank, and add ``score_*`` columns to ``metadata.csv``.

    ``registry``: what a ``models:/`` source resolved to (``ResolvedModel.as_dict()``), recorded
    in ``generation.json`` so the images name the exact model version behind an alias.
    """
    import time

    from augforge.runtime import OnnxGenerator

    t0 = time.perf_counter()
    gen = OnnxGenerator(onnx_path, threads=threads)
    plan = gen.plan(counts, per_class)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AugforgeError(f"{out} is not empty; choose a new --out folder or pass --overwrite")
    score = None
    if filters:
        from augforge.evaluation.filtering import kept_count

        kept_count(1, keep)  # checks the share before any work
        score = _scorer(Path(onnx_path), gen, tuple(filters), train_data, copy_quantile, checkpoint, drop_near_copies)
    check = _near_copy_check(Path(onnx_path), gen.metadata, train_data, copy_quantile) if drop_near_copies and not filters else None
    # Everything goes into a hidden sibling folder, moved into place at the end: a failure or
    # Ctrl-C leaves no half output (and nothing that blocks the next run).
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()  # plain mkdir, not mkdtemp: the published folder keeps the usual permissions
    try:
        rows, dropped = _generate_into(gen, plan, work, seed, check, prefix, progress, score, tuple(filters), keep)
        info = {
            "source": source or str(onnx_path), "registry": registry, "seed": seed, "counts": dict(plan), "prefix": prefix,
            "drop_near_copies": drop_near_copies, "dropped_near_copies": dropped,
            "copy_quantile": copy_quantile if drop_near_copies or "novelty" in filters else None,
            "filter": list(filters), "keep": keep if filters else None, "checkpoint": str(checkpoint) if checkpoint else None,
            "model": {k: gen.metadata.get(k) for k in ("generator", "dataset", "training_run_id", "image_size", "class_names", "step")},
        }
        (work / "generation.json").write_text(json.dumps(info, indent=2) + "\n")
        _publish(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return GenerateResult(out, out / "metadata.csv", dict(plan), dropped, time.perf_counter() - t0)


PUBLISHED = ("images", "metadata.csv", "generation.json")


def _publish(work: Path, out: Path) -> None:
    """Move ``work``'s outputs into ``out``; on --overwrite the old ones are replaced (other files stay)."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(work, out)  # one rename (an empty ``out`` is replaced whole)
        return
    trash = work / ".replaced"
    trash.mkdir()
    for name in PUBLISHED:
        if (out / name).exists():
            os.replace(out / name, trash / name)
        os.replace(work / name, out / name)


def _generate_into(gen, plan, out: Path, seed: int, check, prefix: str, progress: bool, score=None,
                   filters: tuple[str, ...] = (), keep: float = 1.0):
    """Render, check and write every image of ``plan`` into ``out``; returns (metadata rows, dropped per class)."""
    import pandas as pd
    from tqdm import tqdm

    from augforge import envvars

    images_dir = out / "images"
    images_dir.mkdir()

    rows, dropped = [], {}
    total = sum(n for _, n in plan)
    bar = tqdm(total=total, unit="img", desc="generating", disable=not progress or total == 0)
    pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))  # PNG encoding releases the GIL
    try:
        number = 0
        for name, n in plan:
            label = gen.model_label(name)
            if filters:
                images, table, dropped[name] = _filtered_draws(gen, score, seed, name, label, n, keep)
                writes = []
                for img, extra in zip(images, table.to_dict("records")):
                    image_id = f"{prefix}_{seed}_{number:07d}"
                    rows.append({"lesion_id": f"{prefix}L_{seed}_{number:07d}", "image_id": image_id, "dx": name,
                                 "dx_type": "synthetic", "age": "", "sex": "unknown", "localization": "unknown", **extra})
                    number += 1
                    writes.append(pool.submit(_write_png, img, images_dir / f"{image_id}.png"))
                for w in writes:
                    w.result()
                bar.update(len(images))
                continue
            kept, next_ordinal, rounds, n_dropped = 0, 0, 0, 0
            while kept < n:
                want = n - kept
                for start in range(0, want, BLOCK):  # one near-copy check per block, not per image
                    ords = np.arange(next_ordinal + start, next_ordinal + min(want, start + BLOCK))
                    # a PNG is at most about the raw size (+ headers): refuse before the disk fills up
                    envvars.check_free_space(out, len(ords) * (gen.image_size**2 * 3 + 1024), f"{len(ords)} images",
                                             "free space or choose an --out folder on a bigger disk")
                    images = gen.render(seed, np.full(len(ords), label), ords)
                    if check is not None:
                        fresh = ~check(images)
                        n_dropped += int((~fresh).sum())
                        images = images[fresh]
                    writes = []
                    for img in images:
                        image_id = f"{prefix}_{seed}_{number:07d}"
                        rows.append({"lesion_id": f"{prefix}L_{seed}_{number:07d}", "image_id": image_id, "dx": name,
                                     "dx_type": "synthetic", "age": "", "sex": "unknown", "localization": "unknown"})
                        number += 1
                        writes.append(pool.submit(_write_png, img, images_dir / f"{image_id}.png"))
                    for w in writes:
                        w.result()
                    kept += len(images)
                    bar.update(len(images))
                next_ordinal += want
                rounds += 1
                if kept < n and rounds >= MAX_ROUNDS:
                    raise AugforgeError(
                        f"class {name}: {n_dropped} of {next_ordinal} draws were near-copies of training images "
                        f"after {rounds} rounds; the generator memorises this class — do not use it, or lower --copy-quantile"
                    )
            if check is not None:
                dropped[name] = n_dropped
    finally:
        bar.close()
        pool.shutdown()
    score_cols = [f"score_{k}" for k in ("realism", "label", "novelty", "rank") if k == "rank" or k in filters] if filters else []
    pd.DataFrame(rows, columns=COLUMNS + score_cols).to_csv(out / "metadata.csv", index=False)
    return rows, dropped


def _write_png(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, format="PNG")
