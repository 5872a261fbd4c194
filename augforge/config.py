"""One run config, presets, and the dotted ``--set key=value`` override syntax.

The same dotted keys are used on the command line (``--set train.lr_g=2e-4``), as Optuna
parameter names and as MLflow params, so any tracked run or trial replays as a CLI call.
Sections ``dataset``, ``generator`` and ``discriminator`` hold plugin constructor kwargs:
their keys are checked against the plugin's signature when the component is built.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from augforge.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "synthetic-lesions"  # dataset plugin name (`augforge plugins`)
    image_size: int = 64  # pixels, square: centre-crop then resize
    val_fraction: float = 0.1  # share of lesions (groups) in the validation split
    test_fraction: float = 0.1  # share of lesions (groups) in the test split
    split_seed: int = 0  # seeds the lesion-grouped, class-stratified split
    balance: bool = False  # class-balanced sampling (each class equally likely per draw)
    augment: str = "none"  # albumentations pipeline name (augforge.data.AUGMENTATIONS)
    skip_bad: bool = False  # skip (and report) unreadable files instead of failing
    drop_framed: bool = False  # drop round-framed microscope images (paper A's filter)
    drop_marks: bool = False  # drop images with ink marks/rulers (paper A's filter)
    cache_dir: str = ".cache/augforge"  # decode-once uint8 arrays live here


@dataclass
class ModelConfig:
    generator: str = "sngan"  # generator plugin name
    discriminator: str = ""  # discriminator plugin name; "" = same as generator
    latent_dim: int = 128  # size of the noise vector z
    conditional: bool = True  # condition on the class label (False: one model per class set)


@dataclass
class TrainConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds torch, numpy, python and the sampler
    batch_size: int = 64  # images per step (per process under torchrun)
    steps: int = 2000  # optimiser steps of G (one D step or more per G step)
    loss: str = "hinge"  # bce (non-saturating) | hinge | wgan-gp | lsgan
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D (TTUR: set higher than lr_g)
    lr_decay: str = "none"  # none | linear | cosine: warm-down of both rates towards 0 at the end of the run
    lr_decay_start: float = 0.0  # share of the run (steps or max_minutes, whichever ends first) before the decay starts
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8  # Adam epsilon (Keras default 1e-7 in paper A)
    n_critic: int = 1  # D steps per G step
    gp_weight: float = 0.0  # gradient-penalty weight (wgan-gp style, on interpolates)
    r1_gamma: float = 0.0  # R1 penalty weight on real images
    diffaug: str = ""  # DiffAugment policy, e.g. "color,translation,cutout" ("" = off)
    ema_decay: float = 0.0  # generator EMA decay per step (0 = off; e.g. 0.999)
    lecam_weight: float = 0.0  # LeCam regulariser weight on D (0 = off; 0.3 in the paper's CIFAR runs)
    lecam_decay: float = 0.99  # per-step decay of LeCam's moving averages of D's logits
    topk_min: float = 1.0  # top-k G updates: floor of the kept share of fakes (1 = off; paper 0.5-0.75)
    topk_decay: float = 0.99  # top-k: kept share = max(topk_decay**epoch, topk_min)
    cr_weight: float = 0.0  # balanced consistency regularisation weight (0 = off; 2 extra D passes)
    ms_weight: float = 0.0  # mode-seeking term on G (MSGAN): pairs of z with the same class must give different images (0 = off)
    ssl_weight: float = 0.0  # D's self-supervised loss on real images (D.self_supervised_loss; 0 = off)
    ac_weight: float = 0.0  # auxiliary classifier: cross-entropy of D's class head on real (D) and fake (G) images (0 = off)
    reuse_fake: bool = False  # G's step learns from the fakes D just saw (same z, labels): one G forward per step fewer
    amp: str = "auto"  # auto | off | bf16 | fp16; bf16 also on CPU (AVX-512 BF16), fp16 CUDA only
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads (0 = torch's default, one per core)
    compile: bool = False  # torch.compile the models (opt-in)
    num_workers: int = 0  # DataLoader workers
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    log_every: int = 10  # steps between metric logs
    sample_every: int = 0  # steps between sample grids (0 = once per epoch)
    eval_every: int = 0  # steps between cheap evaluations (0 = off)
    eval_metric: str = "kid"  # evaluator used to keep the best checkpoint
    eval_extra: str = ""  # more cheap evaluators logged at each evaluation, e.g. "fid,detection-rate"
    eval_every_minutes: float = 0.0  # also evaluate each time this much wall time passed (0 = off)
    max_minutes: float = 0.0  # wall-clock budget of the run in minutes, resumes included (0 = none)
    budget_clock: str = "wall"  # wall | cpu: what max_minutes and eval_every_minutes count (cpu: this process's CPU time, fair when runs share cores)
    out_dir: str = "runs"  # run folders are created under it


@dataclass
class TrackingConfig:
    uri: str = ""  # "" = MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db
    experiment: str = "augforge"
    run_name: str = ""


#: dataclass-backed sections; the others are free-form plugin kwargs
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "tracking": TrackingConfig}
PLUGIN_SECTIONS = ("dataset", "generator", "discriminator")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    dataset: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    preset: str = ""

    @property
    def discriminator_name(self) -> str:
        return self.model.discriminator or self.model.generator

    # ---- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values; the same keys `--set` accepts."""
        out: dict[str, Any] = {"preset": self.preset}
        for section in (*SECTIONS, *PLUGIN_SECTIONS):
            for key, value in (dataclasses.asdict(getattr(self, section)) if section in SECTIONS else getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuild from ``to_dict()`` output (config.json, checkpoints); unknown keys fail."""
        cfg = cls()
        for section, typ in SECTIONS.items():
            if section in d:
                valid = {f.name for f in dataclasses.fields(typ)}
                unknown = set(d[section]) - valid
                if unknown:
                    raise ConfigError(f"unknown {section} key(s) {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
                setattr(cfg, section, typ(**d[section]))
        for section in PLUGIN_SECTIONS:
            setattr(cfg, section, dict(d.get(section) or {}))
        cfg.preset = d.get("preset", "")
        return cfg

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        cfg = cls()
        return apply_overrides(cfg, flatten(d))


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in SECTIONS or k in PLUGIN_SECTIONS:
            for kk, vv in (v or {}).items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def _coerce(key: str, raw: Any, typ: Any) -> Any:
    """Turn a command-line string into the field's type; fail naming key, value and type."""
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    try:
        if typ is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is str:
            return raw
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
            if raw.lower() in ("", "none", "null"):
                return None
            inner = [a for a in args if a is not type(None)][0]
            return _coerce(key, raw, inner)
    except ValueError:
        raise ConfigError(f"--set {key}={raw!r}: expected {getattr(typ, '__name__', typ)}") from None
    return parse_literal(raw)


def parse_literal(raw: str) -> Any:
    """Plugin kwargs from the command line: JSON when it parses (3, 0.5, true, [1,2]), else str."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if raw.lower() in ("none", "null"):
            return None
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        return raw


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return a copy of ``cfg`` with dotted-key overrides applied; unknown keys fail loudly."""
    cfg = RunConfig.from_json_dict(cfg.to_dict()) if overrides else cfg
    for key, raw in overrides.items():
        if key == "preset":
            cfg.preset = str(raw)
            continue
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"config key {key!r} needs a section: one of {', '.join((*SECTIONS, *PLUGIN_SECTIONS))}")
        if section in PLUGIN_SECTIONS:
            getattr(cfg, section)[name] = parse_literal(raw) if isinstance(raw, str) else raw
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r} in {key!r}; valid: {', '.join((*SECTIONS, *PLUGIN_SECTIONS))}"
            )
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}; valid {section} keys: {', '.join(hints)}")
        setattr(obj, name, _coerce(key, raw, hints[name]))
    return cfg


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``; a missing ``=`` fails naming the item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr_g=2e-4")
        out[key.strip()] = value
    return out


def resolve(preset: str = "", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the preset, then overrides (CLI flags and --set), in that order."""
    from augforge.presets import PRESETS

    cfg = RunConfig()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        cfg = apply_overrides(cfg, PRESETS[preset])
        cfg.preset = preset
    return apply_overrides(cfg, overrides or {})
