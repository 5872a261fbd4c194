"""``mix``: real items plus synthetic ones at a ratio, checked for one label vocabulary and one image size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augforge_runtime.dataset import SyntheticLesions
from augforge_runtime.errors import RuntimeModelError


class Mixed:
    """Real and synthetic items interleaved in a seeded order; ``is_synthetic(i)`` says which."""

    def __init__(self, real, synthetic, synth_items: np.ndarray, rng: np.random.Generator, policy=None):
        self.real, self.synthetic, self.policy = real, synthetic, policy
        #: indices into ``synthetic`` that joined, sorted (what ``augforge_runtime.policies.mix`` returns)
        self.synthetic_indices = np.sort(np.asarray(synth_items, np.int64))
        # (source, index) pairs: source 0 = real, 1 = synthetic; one seeded shuffle of both
        self._items = np.concatenate([
            np.stack([np.zeros(len(real), np.int64), np.arange(len(real))], 1),
            np.stack([np.ones(len(synth_items), np.int64), np.asarray(synth_items, np.int64)], 1),
        ])
        self._items = self._items[rng.permutation(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int):
        src, j = self._items[i]
        return (self.synthetic if src else self.real)[int(j)]

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A DataLoader batch: its synthetic items are rendered in one onnxruntime call."""
        pairs = self._items[np.asarray(indices, np.int64)]
        synth = [int(j) for src, j in pairs if src]
        batch = getattr(self.synthetic, "__getitems__", None)
        made = iter(batch(synth) if batch else [self.synthetic[j] for j in synth])
        return [next(made) if src else self.real[int(j)] for src, j in pairs]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def is_synthetic(self, i: int) -> bool:
        return bool(self._items[i][0])

    @property
    def n_synthetic(self) -> int:
        return int(self._items[:, 0].sum())

    def weight(self, i: int) -> float:
        """Loss weight of item ``i``: 1 for real items, the policy's synthetic weight (``:weight=W``) else."""
        return float(self.policy.synthetic_weight) if self.policy is not None and self.is_synthetic(i) else 1.0


def _vocabulary(real_dataset, class_names) -> list[str] | None:
    names = class_names if class_names is not None else getattr(real_dataset, "class_names", None)
    if names is None:
        names = getattr(real_dataset, "classes", None)  # torchvision's ImageFolder and friends
    return None if names is None else [str(n) for n in names]


def check_labels_agree(synthetic: SyntheticLesions, vocabulary: list[str] | None) -> None:
    """Synthetic labels must be ids in the real dataset's vocabulary, for the same classes."""
    if vocabulary is None:
        if synthetic.label_map is None:
            raise RuntimeModelError(
                "mix cannot check that real and synthetic labels mean the same classes: the real dataset has no "
                "class_names/classes attribute; pass mix(..., class_names=[...real vocabulary...]) or build the "
                "sampler with label_map={'mel': <real id>, ...}"
            )
        return  # the caller mapped the labels explicitly
    fix = {name: vocabulary.index(name) for name in synthetic.counts if name in vocabulary}
    for label, name in synthetic.label_names.items():
        if synthetic.label_map is None and name not in vocabulary:
            raise RuntimeModelError(
                f"the real data have no class {name!r} (real: {', '.join(vocabulary)}): leave it out of the sampler's "
                f"counts, or map it to a real id with label_map"
            )
        if not 0 <= label < len(vocabulary):
            raise RuntimeModelError(
                f"synthetic class {name!r} is labelled {label}, outside the real vocabulary 0..{len(vocabulary) - 1} "
                f"({', '.join(vocabulary)}); label_map={fix}"
            )
        if synthetic.label_map is None and vocabulary[label] != name:
            raise RuntimeModelError(
                f"label vocabularies differ: synthetic {name!r} is label {label} but the real dataset's label {label} is "
                f"{vocabulary[label]!r} (real: {', '.join(vocabulary)}; synthetic: {', '.join(synthetic.class_names)}); "
                f"build the sampler with label_map={fix}"
            )


def _shape(item) -> tuple | None:
    image = item[0] if isinstance(item, (tuple, list)) else item
    shape = getattr(image, "shape", None)
    if shape is None and hasattr(image, "size") and hasattr(image, "mode"):  # a PIL image: (W, H)
        return ("PIL", tuple(image.size))
    return tuple(shape) if shape is not None else None


def mix(real_dataset, synthetic: SyntheticLesions, ratio: float | None = None, seed: int = 0,
        class_names: Sequence[str] | None = None, *, policy=None, real_labels=None, scores=None) -> Mixed:
    """Every item of ``real_dataset`` plus synthetic items chosen by ``ratio`` or by ``policy``.

    ``ratio`` is synthetic items per real item (0.5: one synthetic image for every two real
    ones), drawn without replacement from ``synthetic`` and shuffled in with the real items,
    both by ``seed``. ``policy`` (``"ratio:0.5"``, ``"balanced:filtered"``, a ``Policy``; see
    ``augforge_runtime.policies``) chooses per class exactly as ``augforge evaluate`` 's
    policy study measured it, for the same seed: it needs the real labels (``real_labels``, else
    ``real_dataset.targets`` / ``.labels``, ids in the vocabulary below) and, for a filtered
    policy, one score per synthetic item (``scores``, e.g. ``score_rank`` from the
    ``metadata.csv`` of ``augforge generate --filter``). A two-stage policy
    (``pretrain-synthetic:...``) gives the first stage's set; fine-tune on ``real_dataset``
    alone afterwards. ``Mixed.weight(i)`` is the policy's loss weight of an item. Checked
    before anything is mixed:

    - labels: the real vocabulary is ``class_names``, else ``real_dataset.class_names`` or
      ``.classes``; each synthetic class must carry its id there (build the sampler with
      ``label_map`` when the two orders differ). Without any vocabulary, ``label_map`` is required.
    - sizes: the first real and synthetic items must have the same image shape (set the
      sampler's ``transform``/``output`` to produce what the real dataset produces).
    """
    if (ratio is None) == (policy is None):
        raise RuntimeModelError("give exactly one of ratio=R (synthetic items per real item) or policy='ratio:0.5' etc.")
    vocabulary = _vocabulary(real_dataset, class_names)
    check_labels_agree(synthetic, vocabulary)
    rng = np.random.default_rng(seed)
    if policy is not None:
        from augforge_runtime.policies import mix as choose, parse_policy

        policy = parse_policy(policy)
        labels = real_labels if real_labels is not None else getattr(real_dataset, "targets", getattr(real_dataset, "labels", None))
        if labels is None or len(labels) != len(real_dataset):
            raise RuntimeModelError(f"policy {policy} needs the real labels: pass real_labels=[one int per real item] "
                                    f"(got {'none' if labels is None else f'{len(labels)} for {len(real_dataset)} items'})")
        n_classes = len(vocabulary) if vocabulary is not None else None
        items = choose(labels, synthetic.labels, policy, seed=seed, scores=scores, num_classes=n_classes)
    else:
        if not np.isfinite(ratio) or ratio < 0:
            raise RuntimeModelError(f"ratio must be a number >= 0 (synthetic items per real item), got {ratio}")
        n = int(round(ratio * len(real_dataset)))
        if n > len(synthetic):
            raise RuntimeModelError(
                f"ratio {ratio} needs {n} synthetic items but the sampler holds {len(synthetic)}; "
                f"make it larger (per_class/counts) or lower the ratio"
            )
        items = rng.choice(len(synthetic), size=n, replace=False) if n else np.zeros(0, np.int64)
    if len(items) and len(real_dataset):
        real_shape, synth_shape = _shape(real_dataset[0]), _shape(synthetic[0])
        if real_shape is not None and synth_shape is not None and real_shape != synth_shape:
            raise RuntimeModelError(
                f"image sizes differ: real items are {real_shape}, synthetic items are {synth_shape} "
                f"(generator makes {synthetic.image_shape[0]} px); give the sampler a transform that resizes, "
                f"or export a generator trained at the real size"
            )
    return Mixed(real_dataset, synthetic, items, rng, policy)
