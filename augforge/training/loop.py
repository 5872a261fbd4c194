"""The one training loop, in numbered stages (EDM / nanoGPT style); what it uses lives beside it.

    0. config + run folder     checks, resume config, config.json before step 1  (state, lifecycle)
    1. setup                   torchrun, device, AMP, seeds                      (distributed, rng)
    2. data                    decode-once cache, lesion-grouped splits, epoch order (batches)
    3. models + optimisers     registry.build, Adam (TTUR = lr_d != lr_g), EMA     (nets)
    4. resume                  models, optimisers, EMA, scalers, RNG, data position (state)
    5. tracking                MLflow run (params, tags), ``augforge_run_start``  (lifecycle)
    6. loop                    D step(s), G step, EMA, metrics, samples, eval, checkpoints
    7. end                     last checkpoint, loss curve, artifacts, ``augforge_run_end``

Exact resume. Every source of randomness is either a checkpointed RNG state (torch CPU and
CUDA, numpy, python: z, DiffAugment, dropout, penalties) or a pure function of
``(seed, epoch)`` (the data order, ``batches.EpochOrder``). Side work (sample grids,
evaluation) runs inside ``rng.preserved_rng``. So on CPU a run that is killed and resumed ends
with bitwise the same weights as one that never stopped.

Generator EMA (``train.ema_decay`` > 0) uses a warm-up: the decay at step ``s`` is
``min(ema_decay, (1 + s) / (10 + s))``, so short runs get a useful average too.

Metrics, tracked as ``train/<name>`` (the in-training evaluation on the val split as
``val/<name>``, ``augforge evaluate`` as ``eval/<name>``; ``TrainResult.metrics`` and ``report()``
get the bare names). Every ``train.log_every`` steps, means over the window: ``loss_d``, ``loss_g``,
``d_real`` / ``d_fake`` (mean *raw logits* of D on the real and fake batch — loss-agnostic;
apply a sigmoid yourself for a BCE probability), ``grad_norm_d`` / ``grad_norm_g`` (global
L2 norm of the gradients at the log step, before the optimiser step; unscaled under AMP),
``gp`` / ``r1`` / ``lecam`` / ``cr`` / ``ssl`` / ``ac_d`` / ``ac_g`` when enabled, ``topk_fraction``, ``lr_factor``,
``images_per_s`` (real images consumed per second, all processes together) and
``data_wait_share`` (fraction of step time spent waiting for the batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from augforge import registry
from augforge.config import RunConfig
from augforge.errors import TrainingError
from augforge.training import lifecycle as life
from augforge.training.batches import BatchSource, EpochOrder
from augforge.training.budget import Budget
from augforge.training.checkpoints import Checkpointer
from augforge.training.evaluator import build_evaluator, score
from augforge.training.distributed import init_distributed, resolve_amp, resolve_device, weights_digest
from augforge.training.nets import GRID_COLUMNS, build_nets, diffaug, ema_update, optimise, wrap_nets
from augforge.training.progress import Progress, nan_message
from augforge.training.rng import derived_seed, seed_all, set_rng_state
from augforge.training.signals import StopSignals
from augforge.training.state import RunState, check_resume_config, check_train_config, new_window, resolve_resume


def train(cfg: RunConfig, *, tracker=None, resume=None, report: Callable[[int, dict[str, float]], None] | None = None,
          nested: bool = False) -> life.TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; see the module docstring for the stages.

    ``tracker``: an ``augforge.tracking`` tracker (None: MLflow per ``cfg.tracking``).
    ``resume``: a checkpoint or run folder to continue exactly. ``report(step, metrics)`` is
    called after each in-training evaluation and may raise (``optuna.TrialPruned``): the run
    then writes a checkpoint, ends its tracked run as KILLED and re-raises. ``nested``: start
    the tracked run under the active one (sweep trials).
    """
    from augforge import data as data_mod
    from augforge.checkpoint import load_latest
    from augforge.grid import make_grid, save_png
    from augforge.training.losses import (consistency_penalty, get_loss, gradient_penalty, lecam_penalty, r1_penalty,
                                          mode_seeking_penalty, topk_count, topk_logits,
                                          update_lecam_anchors)

    # ---- 0. config + run folder: every component option bound (defaults too), so config.json,
    # the tracked params and the checkpoint show the whole model under the keys --set uses
    cfg = registry.validate_config(cfg, fill_defaults=True)
    resume_state = None
    if resume is not None:
        ckpt_path, resume_state = load_latest(resolve_resume(resume))
        saved_cfg = registry.validate_config(RunConfig.from_json_dict(resume_state["config"]), fill_defaults=True)
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name=saved_cfg.tracking.run_name))
        check_resume_config(cfg, saved_cfg, ckpt_path.resolve().parent.parent)
    t = cfg.train
    check_train_config(t)
    d_loss_fn, g_loss_fn = get_loss(t.loss)

    # ---- 1. setup: distributed, device, seeds, AMP -----------------------------------------
    dist = init_distributed(t.device)
    device = resolve_device(t.device, dist)
    amp_dtype = resolve_amp(t.amp, device)
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_all(t.seed)
    if resume_state is not None:
        run_dir = ckpt_path.resolve().parent.parent
    else:
        run_dir = Path(dist.broadcast(str(life.new_run_dir(cfg)) if dist.main else None))
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name=run_dir.name))
    if dist.main:
        life.write_config(run_dir, cfg)
    dist.barrier()

    # ---- 2. data: rank 0 fills the decode-once cache first, the others then read it ---------
    for turn in (0, 1):
        if (turn == 0) == dist.main:
            arrays, splits = data_mod.load_splits(cfg, out_dir=run_dir if dist.main else None)
        dist.barrier()
    class_names = list(arrays.class_names)
    train_arrays = arrays.subset(np.asarray(splits["train"]))
    order = EpochOrder(train_arrays.labels, t.batch_size, t.seed, cfg.data.balance, dist.rank, dist.world)
    source = BatchSource(train_arrays, cfg, device, t.channels_last)
    bpe = order.batches_per_epoch

    # ---- 3. models, optimisers, EMA ---------------------------------------------------------
    nets = build_nets(cfg, class_names, device, amp_dtype)
    G, D, ema = nets.G, nets.D, nets.ema

    # ---- 4. resume: the training stream is seeded per rank after model init (ranks draw different z)
    s = RunState.new(t.eval_metric)
    budget = Budget(t)
    run_id = None
    seed_all(derived_seed(t.seed, dist.rank, 1))
    if resume_state is not None:
        nets.load_state(resume_state)
        s.restore(resume_state)
        extra = resume_state.get("extra", {})
        budget.before = float(extra.get("train_seconds", 0.0))
        from augforge.runs import resume_identity

        run_id = resume_identity(run_dir, resume_state, write=dist.main)  # None: a copied folder gets its own tracked run
        ranks = extra.get("rng_per_rank") or [resume_state["rng"]]
        if len(ranks) == dist.world:
            set_rng_state(ranks[dist.rank], device)
        else:  # a different world size cannot continue the same streams: derive fresh ones
            seed_all(derived_seed(t.seed, dist.rank, s.step, 2))
        if dist.main:
            print(f"resumed {run_dir} at step {s.step} (epoch {s.epoch + 1}, batch {s.pos})", file=sys.stderr)
    g_params, d_params, ema_lists = nets.params()
    wrap_nets(nets, cfg, dist, device)
    augment = diffaug(t.diffaug)

    # ---- 5. tracking + run_start hook -----------------------------------------------------------
    tracker, run_id, info = life.start_run(cfg, tracker, dist, device, run_dir, run_id, nested, class_names,
                                           resumed_at=s.step if resume_state is not None else None)
    evaluator = build_evaluator(cfg, arrays, splits, device) if dist.main else None
    direction = getattr(evaluator, "direction", None) or life.metric_direction(t.eval_metric)

    # ---- what the loop does besides stepping: checkpoints and sample grids --------------------------
    ckpt = Checkpointer(cfg, class_names, nets, s, dist, device, run_dir, budget, s.step if resume_state is not None else None)
    ckpt.run_id = run_id

    def sample_grid() -> None:
        grid = make_grid(nets.sample(device), GRID_COLUMNS, row_labels=class_names if nets.num_classes else None)
        tracker.log_artifact(save_png(grid, run_dir / "samples" / f"step_{s.step:06d}.png"), "samples")
        s.last_sample = s.step

    def next_batch():
        if s.pos >= bpe:
            s.ended_epochs.append(s.epoch)
            s.epoch, s.pos = s.epoch + 1, 0
        batch = source.get(s.epoch, s.pos, order.epoch(s.epoch))
        s.pos += 1
        return batch

    # ---- 6. the loop (SIGINT/SIGTERM: finish the step, checkpoint, leave cleanly) -------------------
    status, error, last_metrics = "FINISHED", None, {}
    signals = StopSignals()
    progress = Progress(t.steps, s.step, enabled=dist.main, images_per_step=t.batch_size * dist.world, budget=budget)
    sample_gap = max(1, t.steps // 100)  # sample_every=0: once per epoch, at most ~100 grids a run
    budget.begin()  # the budget counts the loop, not the set-up (decoding, detector)
    s.win_time["start"] = time.perf_counter()
    if t.lr_decay != "none":
        nets.set_lr(cfg, budget.progress(s.step))
    try:
        G.train(), D.train()
        while s.step < t.steps:
            signals.check(dist, device)
            log_now = (s.step + 1) % t.log_every == 0
            t0, data_wait = time.perf_counter(), 0.0

            # -- 6a. discriminator step(s)
            D.requires_grad_(True)
            for i in range(t.n_critic):
                td = time.perf_counter()
                real, y = next_batch()
                data_wait += time.perf_counter() - td
                y_d = y if nets.num_classes else None
                z = torch.randn(real.shape[0], nets.latent_dim, device=device)
                if t.reuse_fake and i == t.n_critic - 1:  # G's graph is kept for 6b: one G forward per step fewer
                    with nets.autocast():
                        fake_g = nets.G_run(z, y_d)
                    fake = fake_g.detach()
                else:
                    with torch.no_grad(), nets.autocast():
                        fake = nets.G_nograd(z, y_d)
                if t.channels_last:
                    fake = fake.contiguous(memory_format=torch.channels_last)
                with nets.autocast():
                    real_in, fake_in = augment(real), augment(fake.float())
                    if t.r1_gamma > 0:
                        real_in = real_in.detach().requires_grad_(True)
                    if t.ac_weight > 0:  # AC-GAN: D's class head learns the labels of the real batch
                        (logit_r, cls_r), logit_f = nets.D_cls(real_in, y_d), nets.D_run(fake_in, y_d)
                    else:
                        logit_r, logit_f = nets.D_run(real_in, y_d), nets.D_run(fake_in, y_d)
                    loss_d = d_loss_fn(logit_r.float(), logit_f.float())
                    if t.ac_weight > 0:
                        loss_d = loss_d + t.ac_weight * s.track("ac_d", F.cross_entropy(cls_r.float(), y_d))
                    if t.cr_weight > 0:  # bCR: a second random augmentation of the same images
                        cr = (consistency_penalty(nets.D_run(augment(real), y_d).float(), logit_r.float())
                              + consistency_penalty(nets.D_run(augment(fake.float()), y_d).float(), logit_f.float()))
                        loss_d = loss_d + t.cr_weight * s.track("cr", cr)
                if t.ssl_weight > 0:  # D's auxiliary task on the (augmented) real batch
                    with nets.autocast():
                        loss_d = loss_d + t.ssl_weight * s.track("ssl", nets.D_ssl(real_in.detach(), y_d))
                if t.lecam_weight > 0:
                    update_lecam_anchors(s.lecam, logit_r, logit_f, t.lecam_decay, dist)
                    lc = lecam_penalty(logit_r.float(), logit_f.float(), s.lecam["real"], s.lecam["fake"])
                    loss_d = loss_d + t.lecam_weight * s.track("lecam", lc)
                if t.gp_weight > 0:
                    with torch.autocast(device.type, enabled=False):
                        gp = gradient_penalty(nets.D_run, real_in.detach().float(), fake_in.detach().float(), y_d)
                    loss_d = loss_d + t.gp_weight * s.track("gp", gp)
                if t.r1_gamma > 0:
                    loss_d = loss_d + 0.5 * t.r1_gamma * s.track("r1", r1_penalty(logit_r.float(), real_in))
                gn_d = optimise(loss_d, nets.opt_d, nets.scaler_d, d_params, log_now)

            # -- 6b. generator step; top-k: G learns only from the fakes D finds most realistic (off: k = batch)
            D.requires_grad_(False)
            y_g = y if nets.num_classes else None
            if not t.reuse_fake:
                z = torch.randn(t.batch_size, nets.latent_dim, device=device)
            if t.ms_weight > 0 and y_g is not None:  # mode seeking compares pairs of z within one class
                y_g = torch.cat([y_g[: len(y_g) // 2]] * 2 + [y_g[2 * (len(y_g) // 2):]])
            k = topk_count(t.batch_size, s.epoch + s.pos / bpe, t.topk_decay, t.topk_min)
            with nets.autocast():
                fake = fake_g if t.reuse_fake else nets.G_run(z, y_g)
                if t.ac_weight > 0:  # and G is asked for fakes D classifies as their label
                    logit_g, cls_g = nets.D_cls(augment(fake), y_g)
                    loss_g = (g_loss_fn(topk_logits(logit_g.float(), k))
                              + t.ac_weight * s.track("ac_g", F.cross_entropy(cls_g.float(), y_g)))
                else:
                    loss_g = g_loss_fn(topk_logits(nets.D_frozen(augment(fake), y_g).float(), k))
                if t.ms_weight > 0:
                    loss_g = loss_g + t.ms_weight * s.track("ms", mode_seeking_penalty(fake.float(), z))
            gn_g = optimise(loss_g, nets.opt_g, nets.scaler_g, g_params, log_now)

            # -- 6c. EMA of G; warm-up: early on the average follows G closely (short runs)
            if ema is not None:
                ema_update(ema_lists[0], g_params, ema_lists[1], ema_lists[2], min(t.ema_decay, (1.0 + s.step) / (10.0 + s.step)))
            s.step += 1

            # -- 6d. metrics; NaN guard every step on CPU, at log steps on CUDA (a sync costs there)
            vals = torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                                logit_r.detach().float().mean(), logit_f.detach().float().mean()])
            if device.type == "cpu" or log_now:
                if not all(math.isfinite(v) for v in vals.tolist()):
                    raise TrainingError(nan_message(s.step, vals.tolist(), ckpt.saved_step, ckpt.last, t, device.type == "cpu"))
                s.add_losses(vals.tolist())
            else:
                s.window["dev"] = s.window.get("dev", torch.zeros(4, device=device)) + vals
            s.count_step(data_wait)
            progress.update(s.step, time.perf_counter() - t0, vals if log_now else None)
            if log_now:
                if "dev" in s.window:
                    dev = s.window.pop("dev").tolist()
                    if not all(math.isfinite(v) for v in dev):
                        raise TrainingError(nan_message(s.step, dev, ckpt.saved_step, ckpt.last, t, False))
                    s.add_losses(dev)
                m = s.window_metrics(t, images_per_step=t.batch_size * dist.world, epoch_float=s.epoch + s.pos / bpe)
                m.update(grad_norm_d=gn_d, grad_norm_g=gn_g)
                if t.topk_min < 1:
                    m["topk_fraction"] = k / t.batch_size
                if t.lr_decay != "none":
                    m["lr_factor"] = nets.opt_g.param_groups[0]["lr"] / t.lr_g
                tracker.log_metrics({f"train/{key}": v for key, v in m.items()}, step=s.step)
                last_metrics.update(m)
                s.window = new_window()

            # -- 6e. epoch end: epoch metrics, hook, grid
            if s.pos >= bpe:
                s.ended_epochs.append(s.epoch)
                s.epoch, s.pos = s.epoch + 1, 0
            while s.ended_epochs:
                done, em = s.close_epoch()
                tracker.log_metrics({f"train/{key}": v for key, v in {**em, "epoch": float(done)}.items()}, step=s.step)
                if dist.main:
                    life.call_hook("augforge_epoch_end", run=info, epoch=done, metrics=dict(em))
                if t.sample_every == 0 and s.step - s.last_sample >= sample_gap and dist.main:
                    sample_grid()
            if t.sample_every and s.step % t.sample_every == 0 and dist.main:
                sample_grid()

            # -- 6f. budget, in-training evaluation, best.pt, report(), learning rate
            budget_hit, timed_eval = budget.spent(), budget.eval_due()
            lr_progress = budget.progress(s.step) if t.lr_decay != "none" else 0.0
            if dist.enabled and (t.max_minutes or t.eval_every_minutes):  # clocks differ: rank 0 decides
                budget_hit, timed_eval, lr_progress = dist.broadcast((budget_hit, timed_eval, lr_progress))
            if t.lr_decay != "none":  # every rank the same rate, else DDP's replicas drift apart
                nets.set_lr(cfg, lr_progress)
            evaluating = t.eval_every > 0 or t.eval_every_minutes > 0
            if ((t.eval_every and s.step % t.eval_every == 0) or timed_eval
                    or (budget_hit and evaluating and s.best["step"] != s.step)):  # the budget's last step counts too
                if timed_eval:
                    budget.evaluated()
                if evaluator is not None:
                    em = score(evaluator, ema if ema is not None else G, device, budget)
                    tracker.log_metrics({f"val/{key}": v for key, v in em.items()}, step=s.step)
                    last_metrics.update(em)
                    if s.improves(em.get(t.eval_metric), t.eval_metric, direction):
                        tracker.log_metrics({f"val/best_{t.eval_metric}": s.best["value"]}, step=s.step)
                dist.barrier()
                s.best = dist.broadcast(s.best)
                if s.best["step"] == s.step:
                    ckpt.write(ckpt.best)
                if report is not None and dist.main:
                    try:
                        report(s.step, dict(last_metrics))
                    except BaseException:
                        status = "KILLED"
                        raise

            # -- 6g. checkpoint; the budget ends the run here, cleanly
            if budget_hit:
                s.stop_reason = "budget"
            if s.step % t.checkpoint_every == 0 or s.step == t.steps or budget_hit:
                ckpt.write()
            if budget_hit:
                break
        s.stop_reason = s.stop_reason or "steps"
    except StopSignals.Stop:
        status, s.stop_reason = "KILLED", f"signal {signals.received}"
    except BaseException as exc:
        error = exc
        s.stop_reason = f"{'stopped by report()' if status == 'KILLED' else 'error'}: {type(exc).__name__}"
        if status != "KILLED":
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    finally:
        progress.close()
        signals.restore()

    # ---- 7. end: last checkpoint, curves, artifacts, run_end hook ---------------------------------
    checkpoint = ckpt.last if ckpt.last.exists() else None
    try:
        # a KeyboardInterrupt may have cut a step in half: keep the previous checkpoint then
        if status == "KILLED" and not isinstance(error, KeyboardInterrupt) and ckpt.saved_step != s.step:
            checkpoint = ckpt.write()
        if status != "FAILED" and dist.main:
            if s.step != s.last_sample:
                sample_grid()
            if s.history["step"]:
                tracker.log_artifact(ckpt.loss_curve())
            for path in (ckpt.last, ckpt.best):
                if path.exists():
                    tracker.log_artifact(path, "checkpoints")
            checkpoint = ckpt.last if ckpt.last.exists() else checkpoint
        elif dist.main and (run_dir / "loss_curve.png").exists():
            tracker.log_artifact(run_dir / "loss_curve.png")
    except BaseException as exc:  # a failure while saving must not hide the original error
        if error is None:
            error, status = exc, "FAILED"
    if s.best["value"] is not None:
        last_metrics.update({f"best_{s.best['metric']}": s.best["value"], "best_step": float(s.best["step"])})
    result = life.TrainResult(status=status, step=s.step, epoch=s.epoch, run_dir=run_dir, run_id=run_id, checkpoint=checkpoint,
                              best_checkpoint=ckpt.best if ckpt.best.exists() else None, metrics=last_metrics)
    if dist.enabled:
        print(f"[rank {dist.rank}] final weights digest {weights_digest(G, D, *([ema] if ema is not None else []))} step {s.step}",
              file=sys.stderr, flush=True)
    if dist.main:
        life.end_report(tracker, run_dir=run_dir, info=info, result=result, stop_reason=s.stop_reason, signal_name=signals.received,
                        error=error, t=t, seconds=budget.seconds(), best=s.best)
    if dist.enabled:
        with contextlib.suppress(Exception):
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    if error is not None:
        raise error
    return result
