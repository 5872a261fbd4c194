"""``synthetic-lesions``: procedurally drawn, lesion-like images — the embedded default.

A DEMO dataset, not dermoscopy: it lets the demo and the tests run on a machine with no data.
Each class has its own recipe loosely after the textbook dermoscopic pattern (regular brown
nevus with a network; large, asymmetric, variegated melanoma with peripheral dots and
streaks; tan keratosis with milia-like white and comedo-like dark dots; pink basal-cell
carcinoma with blue-grey nests and branching red vessels; ill-defined red, scaly actinic
keratosis; red-purple lacunae of vascular lesions; dermatofibroma's white centre inside a
brown ring; squamous-cell carcinoma's yellow keratin centre with dotted vessels), drawn on
skin of varying tone with lighting, texture and hairs. The differences are strong enough for
a classifier to learn and for a small GAN to pick up within minutes; nothing here is a
medical claim.

Every lesion is seen twice (``views=2``): the same lesion rotated, flipped, shifted, under
other light and other hairs — two images, one group, so lesion-grouped splits are
exercised as on HAM10000. Images are made in memory (``source`` is ""), deterministic
from ``seed``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from augforge.data import CLASS_NAMES, parse_classes
from augforge.errors import ConfigError
from augforge.interfaces import Dataset
from augforge.plugins import hookimpl

#: bump when the drawing changes (part of the cache fingerprint)
DRAWING_VERSION = 1

#: the seven HAM10000 classes, the default
DEFAULT_CLASSES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]

# Per class: radius range (share of the image), border irregularity, soft-edge width (share
# of the radius), main colours (RGB), and feature switches.
RECIPES: dict[str, dict] = {
    "nv": dict(radius=(0.17, 0.25), irregular=0.04, soft=0.18, colours=[(125, 78, 50), (95, 58, 38)], network=0.45),
    "mel": dict(radius=(0.25, 0.36), irregular=0.20, soft=0.08, colours=[(80, 45, 30), (35, 22, 22)],
                blotches=[(120, 120, 140), (150, 75, 60), (55, 35, 30)], dots=(12, 30), streaks=(6, 16), asym=0.3),
    "bkl": dict(radius=(0.20, 0.30), irregular=0.09, soft=0.05, colours=[(180, 140, 95), (150, 110, 70)],
                milia=(5, 14), comedo=(4, 10)),
    "bcc": dict(radius=(0.18, 0.28), irregular=0.10, soft=0.25, colours=[(220, 160, 160), (205, 140, 145)],
                nests=(2, 6), vessels=(3, 6)),
    "akiec": dict(radius=(0.22, 0.34), irregular=0.12, soft=0.45, colours=[(205, 110, 105), (185, 90, 90)],
                  scale=0.35, strawberry=True),
    "vasc": dict(radius=(0.14, 0.24), irregular=0.06, soft=0.06, colours=[(150, 35, 55), (115, 25, 65)], lacunae=(6, 14)),
    "df": dict(radius=(0.12, 0.18), irregular=0.05, soft=0.35, colours=[(160, 110, 80), (140, 95, 70)],
               scar=True, ring=True),
    "scc": dict(radius=(0.20, 0.30), irregular=0.12, soft=0.20, colours=[(215, 140, 130), (200, 125, 115)],
                keratin=True, dotted=(15, 35)),
    "unk": dict(radius=(0.15, 0.30), irregular=0.10, soft=0.25, colours=[(190, 140, 120), (170, 120, 100)]),
}

SKIN_TONES = np.array([(236, 196, 178), (225, 178, 160), (214, 160, 140), (200, 145, 125), (186, 132, 108), (228, 188, 182)], np.float32)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random ``cells x cells`` grid, bicubically upsampled."""
    grid = rng.random((cells, cells)).astype(np.float32)
    up = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(up, 0.0, 1.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _mix(rgb: np.ndarray, colour, m: np.ndarray) -> None:
    """In place: blend channel-first ``rgb [3, n, n]`` towards ``colour`` by weight ``m [n, n]``."""
    rgb += (np.asarray(colour, np.float32)[:, None, None] - rgb) * np.asarray(m, np.float32)[None]


def _draw_lesion(label: str, rng: np.random.Generator, n: int) -> Image.Image:
    """The lesion alone, as an RGBA layer ``n x n`` in its own (canonical) frame."""
    r = RECIPES[label]
    yy, xx = (np.mgrid[:n, :n].astype(np.float32) + 0.5) / n - 0.5
    radius = rng.uniform(*r["radius"])
    aspect = rng.uniform(0.75, 1.0)
    theta = np.arctan2(yy, xx)
    dist = np.sqrt(xx**2 + (yy / aspect) ** 2)
    edge = np.ones_like(theta)
    for k in range(2, 10):
        edge += r["irregular"] * rng.normal() / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = radius * np.clip(edge, 0.4, 1.8)
    inside = _smoothstep((edge - dist) / (r["soft"] * radius + 1e-6) + 0.5)

    # colour: two main colours mixed by smooth noise, darker or lighter towards the centre
    c0, c1 = (np.array(c, np.float32)[:, None, None] * rng.uniform(0.9, 1.1) for c in r["colours"])
    t = _noise(rng, n, 5)
    rel = np.clip(dist / (edge + 1e-6), 0, 1)
    t = np.clip(t + r.get("asym", 0.0) * xx / max(radius, 1e-3) * rng.choice([-1, 1]) + 0.3 * (1 - rel), 0, 1)[None]
    rgb = c0 * (1 - t) + c1 * t  # channel-first [3, n, n]: fast broadcasting
    for colour in r.get("blotches", []):
        m = _noise(rng, n, 6)
        _mix(rgb, colour, 0.8 * _smoothstep((m - 0.62) * 6))
    if r.get("network"):
        f = rng.uniform(40, 55)
        net = np.abs(np.sin(f * xx + _noise(rng, n, 5) * 4)) * np.abs(np.sin(f * yy + _noise(rng, n, 5) * 4))
        lines = (net < 0.12).astype(np.float32) * r["network"] * (0.5 + 0.5 * rel)
        rgb *= 1 - 0.35 * lines[None]
    if r.get("scale"):
        speck = (rng.random((n, n)) < 0.12).astype(np.float32)
        speck = np.asarray(Image.fromarray(speck * 255).convert("L").filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
        _mix(rgb, (245, 235, 225), np.clip(speck * r["scale"] * 3 * _noise(rng, n, 4), 0, 0.9))
    if r.get("strawberry"):
        f = rng.uniform(30, 40)
        _mix(rgb, (240, 220, 215), 0.5 * (np.sin(f * xx) * np.sin(f * yy) > 0.85))
    if r.get("scar"):
        _mix(rgb, (235, 222, 210), _smoothstep((0.55 * edge - dist) / (0.25 * edge + 1e-6) + 0.5))
    if r.get("ring"):
        ring = np.exp(-(((rel - 0.8) / 0.15) ** 2)) * (0.5 + 0.5 * _noise(rng, n, 8))
        rgb *= 1 - 0.35 * ring[None]
    if r.get("keratin"):
        k = _smoothstep((0.45 * edge - dist) / (0.3 * edge + 1e-6) + 0.5) * (0.6 + 0.4 * _noise(rng, n, 7))
        _mix(rgb, (235, 215, 160), k)

    alpha = inside * rng.uniform(0.85, 0.97)
    rgba = np.concatenate([np.clip(rgb, 0, 255), alpha[None] * 255]).astype(np.uint8)
    layer = Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), "RGBA")
    draw = ImageDraw.Draw(layer)
    cx, cy = n / 2, n / 2
    R = radius * n

    def polar(rr, ang):
        return cx + rr * np.cos(ang), cy + rr * np.sin(ang) * aspect

    if "dots" in r:  # irregular dark dots/globules, mostly at the periphery
        for _ in range(rng.integers(*r["dots"])):
            x, y = polar(R * rng.uniform(0.6, 1.05), rng.uniform(0, 2 * np.pi))
            s = rng.uniform(0.6, 1.8) * n / 96
            draw.ellipse([x - s, y - s, x + s, y + s], fill=(25, 18, 18, 230))
    if "streaks" in r:  # radial streaks (pseudopods) leaving the border
        for _ in range(rng.integers(*r["streaks"])):
            a = rng.uniform(0, 2 * np.pi)
            x0, y0 = polar(R * 0.85, a)
            x1, y1 = polar(R * rng.uniform(1.05, 1.3), a + rng.normal(0, 0.05))
            draw.line([x0, y0, x1, y1], fill=(40, 25, 20, 210), width=max(1, n // 64))
    if "milia" in r:
        for _ in range(rng.integers(*r["milia"])):
            x, y = polar(R * rng.uniform(0, 0.8), rng.uniform(0, 2 * np.pi))
            s = rng.uniform(0.8, 1.8) * n / 96
            draw.ellipse([x - s, y - s, x + s, y + s], fill=(250, 245, 230, 235))
    if "comedo" in r:
        for _ in range(rng.integers(*r["comedo"])):
            x, y = polar(R * rng.uniform(0, 0.8), rng.uniform(0, 2 * np.pi))
            s = rng.uniform(1.0, 2.2) * n / 96
            draw.ellipse([x - s, y - s, x + 1.4 * s, y + s], fill=(70, 50, 30, 230))
    if "nests" in r:  # blue-grey ovoid nests
        for _ in range(rng.integers(*r["nests"])):
            x, y = polar(R * rng.uniform(0, 0.7), rng.uniform(0, 2 * np.pi))
            a, b = rng.uniform(2, 5) * n / 96, rng.uniform(1.5, 3.5) * n / 96
            draw.ellipse([x - a, y - b, x + a, y + b], fill=(85, 95, 125, 220))
    if "vessels" in r:  # arborizing vessels: branching red lines
        for _ in range(rng.integers(*r["vessels"])):
            x, y = polar(R * rng.uniform(0, 0.6), rng.uniform(0, 2 * np.pi))
            ang = rng.uniform(0, 2 * np.pi)
            width = max(1, round(rng.uniform(1, 2) * n / 96))
            stack = [(x, y, ang, width, 0)]
            while stack:
                x, y, ang, w, depth = stack.pop()
                length = rng.uniform(6, 14) * n / 96 / (1 + 0.4 * depth)
                x1, y1 = x + length * np.cos(ang), y + length * np.sin(ang)
                draw.line([x, y, x1, y1], fill=(175, 25, 40, 235), width=w)
                if depth < 3:
                    for turn in (-0.5, 0.5):
                        if rng.random() < 0.75:
                            stack.append((x1, y1, ang + turn + rng.normal(0, 0.2), max(1, w - 1), depth + 1))
    if "lacunae" in r:  # red-purple round lacunae with dark septa between them
        for _ in range(rng.integers(*r["lacunae"])):
            x, y = polar(R * rng.uniform(0, 0.85), rng.uniform(0, 2 * np.pi))
            s = rng.uniform(2.5, 5.5) * n / 96
            colour = tuple(int(v) for v in rng.choice([(170, 30, 50), (120, 20, 70), (95, 25, 85), (190, 45, 60)]))
            draw.ellipse([x - s, y - s, x + s, y + s], fill=(*colour, 240), outline=(60, 20, 40, 200))
    if "dotted" in r:  # dotted / hairpin vessels around the keratin
        for _ in range(rng.integers(*r["dotted"])):
            x, y = polar(R * rng.uniform(0.45, 0.95), rng.uniform(0, 2 * np.pi))
            s = rng.uniform(0.5, 1.2) * n / 96
            draw.ellipse([x - s, y - s, x + s, y + s], fill=(185, 35, 45, 230))
    return layer


def _skin(rng: np.random.Generator, n: int) -> np.ndarray:
    """Skin of a random tone with lighting falloff and fine texture, ``float[n, n, 3]``."""
    w = rng.dirichlet(np.ones(len(SKIN_TONES)) * 0.6)
    tone = w @ SKIN_TONES * rng.uniform(0.92, 1.05)
    yy, xx = (np.mgrid[:n, :n].astype(np.float32) + 0.5) / n - 0.5
    gx, gy = rng.normal(0, 0.15, 2)
    light = 1.0 + gx * xx + gy * yy - rng.uniform(0.1, 0.35) * (xx**2 + yy**2)
    texture = 1.0 + 0.06 * (_noise(rng, n, 12) - 0.5) + 0.04 * (rng.random((n, n), np.float32) - 0.5)
    return np.ascontiguousarray((tone[:, None, None] * (light * texture)[None]).transpose(1, 2, 0))


def _hairs(img: Image.Image, rng: np.random.Generator, count: int) -> None:
    draw = ImageDraw.Draw(img)
    n = img.size[0]
    for _ in range(count):
        x, y = rng.uniform(-0.1, 1.1, 2) * n
        ang = rng.uniform(0, 2 * np.pi)
        curve = rng.normal(0, 0.04)
        pts = []
        for _ in range(int(rng.integers(8, 20))):
            pts.append((x, y))
            x, y = x + 0.06 * n * np.cos(ang), y + 0.06 * n * np.sin(ang)
            ang += curve
        shade = int(rng.uniform(20, 70))
        draw.line(pts, fill=(shade, int(shade * 0.8), int(shade * 0.7)), width=max(1, round(rng.uniform(0.6, 1.4) * n / 96)))


def draw_image(label: str, lesion_rng: np.random.Generator, view_rng: np.random.Generator, size: int) -> np.ndarray:
    """One view of one lesion, ``uint8[size, size, 3]``."""
    layer = _draw_lesion(label, lesion_rng, size)
    # the view: rotation, flip, small shift and zoom of the same lesion, as one affine map
    # (PIL maps each output pixel back to its input: input = M @ out + offset)
    phi = view_rng.uniform(0, 2 * np.pi)
    zoom = view_rng.uniform(0.9, 1.12)
    flip = -1.0 if view_rng.random() < 0.5 else 1.0
    shift = view_rng.normal(0, 0.04, 2) * size
    m = np.array([[flip, 0.0], [0.0, 1.0]]) @ np.array([[np.cos(phi), np.sin(phi)], [-np.sin(phi), np.cos(phi)]]) / zoom
    centre = np.array([size / 2, size / 2])
    offset = centre - m @ (centre + shift)
    layer = layer.transform(layer.size, Image.Transform.AFFINE, (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1]),
                            resample=Image.Resampling.BILINEAR)
    skin = Image.fromarray(np.clip(_skin(view_rng, size), 0, 255).astype(np.uint8), "RGB").convert("RGBA")
    out = Image.alpha_composite(skin, layer).convert("RGB")
    _hairs(out, view_rng, int(view_rng.choice([0, 0, 1, 2, 3, 5])))
    return np.asarray(out, dtype=np.uint8)


class SyntheticLesions(Dataset):
    """Procedurally drawn lesion-like images (a DEMO, not dermoscopy); ``n_per_class`` per class.

    ``classes``: names or synonyms (default: the seven HAM10000 classes); ``n_per_class``
    images per class (``views`` per drawn lesion, one group each); ``max_per_class`` caps it
    like the file datasets' option; ``image_size``: drawing size in pixels (the core then
    resizes to ``data.image_size``); ``seed``: everything follows from it.
    """

    name = "synthetic-lesions"
    description = "DEMO: procedurally drawn lesion-like images, no files needed (the embedded default)"

    def __init__(self, *, classes=None, n_per_class: int = 200, max_per_class: int = 0, image_size: int = 96,
                 views: int = 2, seed: int = 0):
        self.classes = parse_classes(classes) or list(DEFAULT_CLASSES)
        if int(n_per_class) < 1 or int(views) < 1 or int(max_per_class) < 0:
            raise ConfigError(f"synthetic-lesions: n_per_class={n_per_class}, views={views} must be >= 1, max_per_class >= 0")
        if int(image_size) < 16:
            raise ConfigError(f"synthetic-lesions: image_size={image_size}: draw at least 16 pixels")
        self.n_per_class = min(int(n_per_class), int(max_per_class)) if max_per_class else int(n_per_class)
        self.image_size, self.views, self.seed = int(image_size), int(views), int(seed)

    def records(self) -> pd.DataFrame:
        rows = []
        for c in self.classes:
            for i in range(self.n_per_class):
                lesion, view = divmod(i, self.views)
                rows.append({"image_id": f"SYN_{c}_{lesion:05d}_{view}", "label": c, "group": f"SYN_{c}_{lesion:05d}", "source": ""})
        return pd.DataFrame(rows, columns=["image_id", "label", "group", "source"])

    def load_image(self, record) -> np.ndarray:
        _, c, lesion, view = record["image_id"].rsplit("_", 3)
        k = CLASS_NAMES.index(c)
        lesion_rng = np.random.default_rng([self.seed, k, int(lesion)])
        view_rng = np.random.default_rng([self.seed, k, int(lesion), 1 + int(view)])
        return draw_image(c, lesion_rng, view_rng, self.image_size)

    def fingerprint(self) -> str:
        return json.dumps([DRAWING_VERSION, self.classes, self.n_per_class, self.image_size, self.views, self.seed])


@hookimpl
def augforge_register_datasets():
    return [SyntheticLesions]
