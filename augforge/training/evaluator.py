"""The in-training evaluation (``train.eval_every`` / ``eval_every_minutes``): what keeps best.pt."""

from __future__ import annotations

import time

import numpy as np

from augforge.training.rng import preserved_rng


def build_evaluator(cfg, arrays, splits, device):
    """The cheap evaluator scored on the **val** split (train split when there is none), or None when off."""
    t = cfg.train
    if not (t.eval_every > 0 or t.eval_every_minutes > 0):
        return None
    from augforge.evaluation import make_training_evaluator

    real_idx = np.asarray(splits.get("val", []))
    real = arrays.subset(real_idx if len(real_idx) else np.asarray(splits["train"])).image_set()
    with preserved_rng(device):  # building it must not shift the training streams (resume)
        return make_training_evaluator(cfg, real, device)


def score(evaluator, net, device, budget) -> dict[str, float]:
    """Evaluate ``net`` (the EMA generator when there is one) without moving any training RNG stream."""
    was_training = net.training
    net.eval()
    with preserved_rng(device):
        em = {key: float(v) for key, v in evaluator(net).items()}
    net.train(was_training)
    em["train_minutes"] = budget.seconds() / 60.0  # x-axis of quality-per-minute curves
    em["process_cpu_minutes"] = time.process_time() / 60.0  # the same in CPU time: fair under load
    return em
