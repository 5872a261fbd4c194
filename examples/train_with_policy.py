"""Train a lesion classifier on real + synthetic images mixed by a named augmentation policy.

What a downstream user does with a registered generator and the policy measured for it
(``augforge evaluate --metrics policy-study``): the same ``augforge_runtime.policies.mix`` the study
used picks the synthetic images, a plain PyTorch ``DataLoader`` feeds real + synthetic, the
policy's synthetic loss weight scales their loss, and ``pretrain-synthetic`` policies fine-tune
on real only afterwards::

    python examples/train_with_policy.py --model models:/augforge-synthetic-lesions@champion \\
        --policy ratio:0.5 --real ../shared/data/ham10000-200x150 --epochs 5
    augforge generate --onnx g.onnx --per-class 700 --filter label,novelty --keep 0.5 --out syn
    python examples/train_with_policy.py --synthetic syn --policy balanced:filtered --real ...

Filtered policies need scored images: a folder written by ``augforge generate --filter``
(its ``score_rank`` column orders them). Real images are split by lesion_id (80/20).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_downstream import Augmented, HamFolder, Subset, balanced_accuracy, tiny_cnn  # noqa: E402

from augforge_runtime.policies import mix, parse_policy  # noqa: E402


class Tagged(torch.utils.data.Dataset):
    """(x, label) items -> (x, label, loss weight)."""

    def __init__(self, ds, weight: float):
        self.ds, self.weight = ds, float(weight)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x, y, self.weight


class Items(torch.utils.data.Dataset):
    """A list of (uint8 image, label) pairs as a dataset."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def synthetic_pool(args, real: HamFolder, need: np.ndarray, size: int, filtered: bool):
    """``(dataset of (image, real label), labels, scores or None)`` holding at least ``need`` per class."""
    if args.synthetic:
        syn = HamFolder(args.synthetic, size, classes=real.classes)
        if filtered and "score_rank" not in syn.meta:
            raise SystemExit(f"{args.synthetic}: no score_rank column; write it with `augforge generate --filter ...`")
        scores = syn.meta["score_rank"].to_numpy(float) if filtered else None
        return syn, syn.labels, scores
    if filtered:
        raise SystemExit("a filtered policy needs scored images: `augforge generate --filter label,novelty --out DIR`, "
                         "then --synthetic DIR")
    from augforge.runtime import SyntheticLesions

    onnx = args.onnx
    if args.model:
        from augforge.export import resolve_onnx

        onnx = resolve_onnx(args.model)
    probe = SyntheticLesions(onnx, per_class=0)
    shared = [c for c in probe.class_names if c in real.classes]
    counts = {c: int(need[real.classes.index(c)]) for c in shared}
    syn = SyntheticLesions(onnx, counts=counts, seed=args.seed, label_map={c: real.classes.index(c) for c in shared})
    labels = np.concatenate([np.full(n, real.classes.index(c)) for c, n in counts.items()]) if counts else np.zeros(0, int)
    return syn, labels, None


def image_size(args) -> int:
    if args.synthetic:
        return args.size
    from augforge.runtime import SyntheticLesions

    onnx = args.onnx
    if args.model:
        from augforge.export import resolve_onnx

        onnx = resolve_onnx(args.model)
    return SyntheticLesions(onnx, per_class=0).generator.image_size


def train(model, loader, epochs: int, lr: float, test_loader, test_true, k: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    bacc = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y, w in loader:
            per = nn.functional.cross_entropy(model(x), y, reduction="none")
            loss = (per * w.float()).sum() / w.float().sum()  # the policy's synthetic loss weight
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in test_loader])
        bacc = balanced_accuracy(pred, test_true, k)
        print(f"  epoch {epoch}: real-test balanced accuracy {bacc:.3f}")
    return bacc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a registered generator, models:/NAME@ALIAS")
    src.add_argument("--onnx", help="generator.onnx written by `augforge export`")
    src.add_argument("--synthetic", help="a folder written by `augforge generate` (needed for filtered policies)")
    p.add_argument("--policy", required=True, help="e.g. top-up:669, ratio:0.5, balanced:filtered, pretrain-synthetic:ratio:1, none (real only)")
    p.add_argument("--real", required=True, help="real images in HAM10000's layout")
    p.add_argument("--size", type=int, default=64, help="image size with --synthetic (px)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--fine-tune-epochs", type=int, default=2, help="pretrain-synthetic: real-only epochs afterwards")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    policy = parse_policy(args.policy)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    size = image_size(args)
    real = HamFolder(args.real, size)
    lesions = real.meta["lesion_id"].unique()
    test_lesions = set(rng.choice(lesions, max(1, len(lesions) // 5), replace=False))
    is_test = real.meta["lesion_id"].isin(test_lesions).to_numpy()
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    train_real, test_real = Subset(real, train_idx), Subset(real, test_idx)
    k = len(real.classes)
    real_labels = real.labels[train_idx]
    need = policy.synthetic_counts(np.bincount(real_labels, minlength=k))

    pool, pool_labels, scores = synthetic_pool(args, real, need, size, policy.filtered)
    have = np.bincount(pool_labels, minlength=k)
    short = [f"{real.classes[c]} ({have[c]} of {need[c]})" for c in range(k) if have[c] < need[c]]
    if short:
        raise SystemExit(f"policy {policy} needs more synthetic images of: {', '.join(short)}")
    idx = mix(real_labels, pool_labels, policy, seed=args.seed, scores=scores, num_classes=k)
    synth = Items([pool[int(i)] for i in idx])
    print(f"policy {policy}: real train {len(train_real)} + synthetic {len(synth)} "
          f"({pd.Series(np.asarray(pool_labels)[idx]).map(dict(enumerate(real.classes))).value_counts().to_dict()}); "
          f"real test {len(test_real)} images of {len(test_lesions)} lesions")

    aug = A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(), A.Normalize(mean=0.5, std=0.5)])
    plain = A.Compose([A.Normalize(mean=0.5, std=0.5)])
    mixed = torch.utils.data.ConcatDataset([Tagged(Augmented(train_real, aug), 1.0),
                                            Tagged(Augmented(synth, aug), policy.synthetic_weight)])
    loader = torch.utils.data.DataLoader(mixed, batch_size=args.batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(Augmented(test_real, plain), batch_size=256)
    test_true = real.labels[test_idx]
    model = tiny_cnn(k)
    print("stage 1: real + synthetic")
    bacc = train(model, loader, args.epochs, 2e-3, test_loader, test_true, k)
    if policy.two_stage:
        print("stage 2: fine-tune on real only")
        real_only = torch.utils.data.DataLoader(Tagged(Augmented(train_real, aug), 1.0), batch_size=args.batch_size, shuffle=True)
        bacc = train(model, real_only, args.fine_tune_epochs, 2e-4, test_loader, test_true, k)
    return {"balanced_accuracy": bacc, "n_real": len(train_real), "n_synthetic": len(synth), "policy": str(policy)}


if __name__ == "__main__":
    main()
