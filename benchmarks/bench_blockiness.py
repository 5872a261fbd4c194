"""Where the 8-px chequerboard comes from: blockiness of raw G and EMA G, and how much of each
sngan up-block's output arrives through its upsampled 1x1 shortcut.

    python benchmarks/bench_blockiness.py CKPT [CKPT ...]     # trained checkpoints (last.pt / best.pt)
    python benchmarks/bench_blockiness.py --init              # freshly initialised G, nearest vs bilinear

For every generator: the blockiness ratio (plugins/augforge_plugins/artefacts.py) at 4, 8 and
16 px over 512 samples, and for `sngan` generators, per up-block, the standard deviation of the
shortcut branch ``skip(up(x))`` and of the residual branch (output - shortcut). With nearest
upsampling the shortcut is constant over 2x2 blocks at each doubling, so whatever it carries
from the 8x8 map reaches the 64-px image as 8x8-pixel tiles.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def measure(G, n: int = 512, seed: int = 0) -> dict:
    from augforge_plugins.artefacts import block_step_ratio

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.latent_dim, generator=g)
    y = torch.arange(n) % max(G.num_classes, 1) if G.num_classes else None
    branches = []
    hooks = []
    blocks = getattr(G, "blocks", [])
    for block in blocks:
        if hasattr(block, "skip"):  # an sngan up-block: output = residual(x) + skip(up(x))
            from augforge_plugins.sngan import _up

            def hook(m, inp, out):
                skip = m.skip(_up(inp[0], getattr(m, "upsample", "nearest")))
                branches.append({"side": out.shape[-1], "shortcut_std": float(skip.std()), "residual_std": float((out - skip).std())})

            hooks.append(block.register_forward_hook(hook))
    G.eval()
    with torch.no_grad():
        x = G(z, y)
    for h in hooks:
        h.remove()
    u8 = _u8(x)
    side = u8.shape[2]
    return {"blockiness": {b: round(block_step_ratio(u8, b), 3) for b in (4, 8, 16) if side >= 2 * b}, "branches": branches}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--init", action="store_true")
    args = ap.parse_args(argv)
    out = {}
    if args.init or not args.checkpoints:  # `make bench` passes nothing: the initialisation comparison
        from augforge_plugins.sngan import SNGANGenerator

        for mode in ("nearest", "bilinear"):
            torch.manual_seed(0)
            out[f"init-{mode}"] = measure(SNGANGenerator(image_size=64, num_classes=7, channels=16, upsample=mode))
    from augforge.checkpoint import load_checkpoint, load_generator

    for path in args.checkpoints:
        state = load_checkpoint(path)
        for ema in (False, True):
            if ema and state.get("g_ema") is None:
                continue
            G, _ = load_generator(state, ema=ema)
            out[f"{path}:{'ema' if ema else 'raw'}"] = measure(G)
    for key, v in out.items():
        br = "; ".join(f"{b['side']}px shortcut {b['shortcut_std']:.3f} / residual {b['residual_std']:.3f}" for b in v["branches"])
        print(f"{key}: blockiness {v['blockiness']}  {br}")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "bench_blockiness.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
