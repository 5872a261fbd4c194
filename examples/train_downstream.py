"""Train a lesion classifier on real images topped up with synthetic ones from an augforge ONNX file.

A downstream pipeline as someone else would write it: its own dataset class, an
albumentations pipeline, a small PyTorch CNN. The only augforge import is ``augforge.runtime``
(numpy + onnxruntime + Pillow; no torch inside it), which samples the generator and mixes the
synthetic images into the real training set at a ratio.

    python examples/train_downstream.py --onnx outputs/demo/generator.onnx \\
        --real ../shared/data/ham10000-200x150 --ratio 0.5 --epochs 5

``--real`` is a folder in HAM10000's layout (``HAM10000_metadata.csv`` or ``metadata.csv`` with
lesion_id, image_id, dx; images in ``images/`` or beside it), e.g. the real HAM10000 or what
``augforge generate`` wrote. Real images are split by lesion_id (80/20); only the training part
is mixed with synthetic images, and accuracy is measured on real held-out lesions only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from augforge.runtime import SyntheticLesions, mix


class HamFolder(torch.utils.data.Dataset):
    """HAM10000-layout folder -> (uint8 HWC image at ``size`` px, label index); a plain
    downstream dataset class (augforge's own loaders are not used here)."""

    def __init__(self, root: str | Path, size: int, classes: list[str] | None = None):
        root = Path(root)
        csv = next((root / n for n in ("HAM10000_metadata.csv", "metadata.csv") if (root / n).is_file()), None)
        if csv is None:
            raise SystemExit(f"{root}: no HAM10000_metadata.csv or metadata.csv")
        self.meta = pd.read_csv(csv, dtype=str)
        folders = [root / "images", root / "HAM10000_images_part_1", root / "HAM10000_images_part_2", root]
        files = {p.stem: p for d in folders if d.is_dir() for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
        self.meta = self.meta[self.meta["image_id"].isin(files)].reset_index(drop=True)
        self.paths = [files[i] for i in self.meta["image_id"]]
        self.classes = classes or sorted(self.meta["dx"].unique())
        self.labels = np.array([self.classes.index(d) for d in self.meta["dx"]])
        self.size = size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
            s = min(im.size)  # centre-crop to a square, then resize
            left, top = (im.width - s) // 2, (im.height - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((self.size, self.size), Image.Resampling.LANCZOS)
            return np.asarray(im), int(self.labels[i])


class Subset(torch.utils.data.Dataset):
    def __init__(self, ds, index):
        self.ds, self.index = ds, np.asarray(index)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.ds[int(self.index[i])]


class Augmented(torch.utils.data.Dataset):
    """Apply an albumentations pipeline to (uint8 HWC image, label) items; -> (float CHW tensor, label)."""

    def __init__(self, ds, pipeline):
        self.ds, self.pipeline = ds, pipeline

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        image, label = self.ds[i]
        x = self.pipeline(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), label


def tiny_cnn(num_classes: int) -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(64, num_classes))


def balanced_accuracy(pred: np.ndarray, true: np.ndarray, k: int) -> float:
    recalls = [(pred[true == c] == c).mean() for c in range(k) if (true == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, help="generator.onnx written by `augforge export`")
    p.add_argument("--real", required=True, help="real images in HAM10000's layout")
    p.add_argument("--ratio", type=float, default=0.5, help="synthetic images per real training image")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    probe = SyntheticLesions(args.onnx, per_class=0)
    size = probe.generator.image_size
    real = HamFolder(args.real, size)
    # lesion-grouped split: every image of a lesion on one side
    lesions = real.meta["lesion_id"].unique()
    test_lesions = set(rng.choice(lesions, max(1, len(lesions) // 5), replace=False))
    is_test = real.meta["lesion_id"].isin(test_lesions).to_numpy()
    train_real, test_real = Subset(real, np.flatnonzero(~is_test)), Subset(real, np.flatnonzero(is_test))

    # synthetic images for the classes both vocabularies share, labelled in the real vocabulary
    shared = [c for c in probe.class_names if c in real.classes]
    n_synth = int(round(args.ratio * len(train_real)))
    per = -(-n_synth // max(1, len(shared)))  # ceil: enough for the ratio
    synth = SyntheticLesions(args.onnx, counts={c: per for c in shared}, seed=args.seed,
                             label_map={c: real.classes.index(c) for c in shared})
    train_set = mix(train_real, synth, ratio=args.ratio, seed=args.seed, class_names=real.classes) if shared else train_real

    train_aug = A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(),
                           A.ColorJitter(0.1, 0.1, 0.1, 0.02, p=0.5), A.Normalize(mean=0.5, std=0.5)])
    test_aug = A.Compose([A.Normalize(mean=0.5, std=0.5)])
    loader = torch.utils.data.DataLoader(Augmented(train_set, train_aug), batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers)
    test_loader = torch.utils.data.DataLoader(Augmented(test_real, test_aug), batch_size=256, num_workers=args.workers)

    model = tiny_cnn(len(real.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    print(f"real train {len(train_real)} + synthetic {len(train_set) - len(train_real)} (ratio {args.ratio}, "
          f"classes {', '.join(shared) or 'none shared'}); real test {len(test_real)} images of {len(test_lesions)} lesions")
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in test_loader]) if len(test_real) else np.zeros(0)
        true = np.array([test_real[i][1] for i in range(len(test_real))])
        bacc = balanced_accuracy(pred, true, len(real.classes))
        print(f"epoch {epoch}: train loss {total / len(train_set):.3f}, real-test balanced accuracy {bacc:.3f}")
    return {"balanced_accuracy": bacc, "n_real": len(train_real), "n_synthetic": len(train_set) - len(train_real)}


if __name__ == "__main__":
    main()
