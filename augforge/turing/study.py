"""A Turing-test study on disk: the blinded image folder and the SQLite database.

::

    STUDY/
      study.sqlite   meta (parameters, hashed admin token), images (the answer key:
                     id -> origin, class, source), raters, answers. Never served.
      images/        <id>.png, the only folder the app reads images from

Blinding. Every image, real or generated, goes through the same steps: decode to RGB, centre
crop, Lanczos resize to ``size`` px, optionally one JPEG round trip at a fixed quality (so both
groups carry the same compression artefacts), then an *uncompressed* PNG (zlib level 0, no
ancillary chunks: no EXIF, gamma, dpi or text). An uncompressed PNG's byte size depends only
on its dimensions, so every file of a study has exactly the same size and the same header
bytes; a compressed format would leak how compressible each image is, which differs between
JPEG-born real photos and generator output. Ids are 16 random hex characters, unrelated to the
origin; files are written in shuffled order with one common modification time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augforge.errors import ConfigError, DataError
from augforge.turing.items import Item, encode_png, pick

DB_NAME = "study.sqlite"
IMAGE_DIR = "images"
ORIGINS = ("real", "generated")
ANSWERS = ORIGINS
ID_RE = re.compile(r"^[0-9a-f]{16}$")
RATER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    origin TEXT NOT NULL CHECK (origin IN ('real', 'generated')),
    class TEXT NOT NULL,
    source TEXT NOT NULL,          -- where the pixels came from (file, dataset id, onnx#index)
    sha256 TEXT NOT NULL           -- of the served file
);
CREATE TABLE IF NOT EXISTS raters (
    id TEXT PRIMARY KEY,
    specialty TEXT NOT NULL,
    years REAL NOT NULL,
    consented_at TEXT NOT NULL,
    user_agent TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    rater TEXT NOT NULL REFERENCES raters(id),
    image TEXT NOT NULL REFERENCES images(id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'generated')),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    position INTEGER NOT NULL,     -- 1-based place of the image in this rater's order
    elapsed_ms INTEGER,            -- time on the image as measured by the browser
    created_at TEXT NOT NULL,
    UNIQUE (rater, image)
);
"""

SPECIALTIES = (
    "dermatologist",
    "dermatology resident",
    "general practitioner",
    "other physician",
    "nurse",
    "medical student",
    "other",
)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hash_token(token: str) -> str:
    # The token is 32 random bytes, so a plain hash is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL journal, durable commits, foreign keys on."""
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")  # every answer is on disk when the 201 goes out
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA busy_timeout=30000")
    return con



# --------------------------------------------------------------------------------------------
# Creating a study


@dataclass
class Created:
    path: Path
    admin_token: str
    n_images: int
    classes: list[str]
    size: int


def create_study(
    out: str | os.PathLike,
    real: list[Item],
    generated: list[Item],
    *,
    per_class: int,
    classes: Iterable[str] = (),
    seed: int = 0,
    size: int | None = None,
    jpeg_quality: int | None = None,
    title: str = "Real or generated? Skin-lesion images",
    real_desc: str = "",
    generated_desc: str = "",
    progress: Callable[[str], None] | None = None,
) -> Created:
    """Pick, blind and write a study; return its admin token (shown once, stored hashed)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder exists and is not empty; choose a new --out folder")
    from augforge.data import parse_classes

    have_real = sorted({it.label for it in real})
    have_gen = sorted({it.label for it in generated})
    classes = parse_classes(list(classes)) or sorted(set(have_real) & set(have_gen))
    if not classes:
        raise DataError(f"no class in common: real images have {have_real}, generated images have {have_gen}")
    for c in classes:
        if c not in have_real or c not in have_gen:
            raise DataError(
                f"class {c!r} missing from the {'real' if c not in have_real else 'generated'} images; "
                f"real: {have_real}, generated: {have_gen}"
            )
    rng = np.random.default_rng(seed)
    chosen = [("real", it) for it in pick(real, classes, per_class, rng, "real images")]
    chosen += [("generated", it) for it in pick(generated, classes, per_class, rng, "generated images")]

    def load(it: Item) -> np.ndarray:
        img = np.asarray(it.load())
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DataError(f"{it.source}: expected uint8[H, W, 3] RGB pixels, got {img.dtype}{list(img.shape)}")
        return img

    # A first pass for the sides only (pixels are not kept: large originals add up).
    sides = [min(load(it).shape[:2]) for _, it in chosen]
    # Default size: the smallest side among the chosen images, so no image is ever upscaled.
    size = size or min(sides)
    small = sorted({o for (o, _), side in zip(chosen, sides) if side < size})
    if small and progress:
        progress(f"warning: some {' and '.join(small)} images are smaller than {size} px and are upscaled")

    token = secrets.token_urlsafe(32)
    meta = {
        "schema_version": SCHEMA_VERSION, "title": title, "seed": seed, "size": size,
        "format": "PNG, uncompressed (zlib level 0), no ancillary chunks", "jpeg_quality": jpeg_quality or "",
        "per_class": per_class, "classes": json.dumps(classes), "real_source": real_desc,
        "generated_source": generated_desc, "created_at": now(), "admin_token_sha256": hash_token(token),
    }
    # Built next to the target (mode 0700: it holds the key) and renamed at the end, so a
    # failed run leaves no half-written study behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_study(work, chosen, load, rng, size, jpeg_quality, meta)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Created(out, token, len(chosen), classes, size)


def _write_study(out: Path, chosen, load, rng, size: int, jpeg_quality: int | None, meta: dict) -> None:
    """Blinded images in shuffled order, then the database with the key and ``meta``."""
    (out / IMAGE_DIR).mkdir()
    ids: set[str] = set()
    rows = []
    for i in rng.permutation(len(chosen)):  # write (and insert) in shuffled order
        origin, it = chosen[i]
        while (image_id := secrets.token_hex(8)) in ids:
            pass
        ids.add(image_id)
        data = encode_png(load(it), size, jpeg_quality)
        (out / IMAGE_DIR / f"{image_id}.png").write_bytes(data)
        rows.append((image_id, origin, it.label, it.source, hashlib.sha256(data).hexdigest()))
    stamp = time.time()
    for image_id in ids:  # one modification time for all: file times must not tell the order
        os.utime(out / IMAGE_DIR / f"{image_id}.png", (stamp, stamp))
    con = connect(out / DB_NAME)
    con.executescript(SCHEMA)
    con.execute("BEGIN")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
    con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", rows)
    con.execute("COMMIT")
    con.close()


# --------------------------------------------------------------------------------------------
# Using a study


class StudyError(Exception):
    """A request the study cannot honour; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def rater_order(image_ids: Iterable[str], rater: str, seed: int) -> list[str]:
    """This rater's image order: a keyed-hash sort, so it is random per rater, deterministic
    from (study seed, rater id) and independent of library versions (resume stays stable)."""
    return sorted(image_ids, key=lambda i: hashlib.sha256(f"{seed}\x1f{rater}\x1f{i}".encode()).digest())


class Study:
    """Thread-safe access to one study folder (one SQLite connection per thread)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        db = self.path / DB_NAME
        if not db.is_file():
            raise ConfigError(f"{self.path}: not a study folder (no {DB_NAME}); make one with `augforge turing create`")
        self._db = db
        self._local = threading.local()
        # One writer at a time inside this process: waiting on a lock is cheaper and fairer
        # than SQLite's busy handler, which sleeps with back-off (latency spikes under load).
        self._write = threading.Lock()
        con = self.con
        self.meta = {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}
        self.seed = int(self.meta["seed"])
        self.title = self.meta["title"]
        self.image_ids = frozenset(r["id"] for r in con.execute("SELECT id FROM images"))
        missing = [i for i in self.image_ids if not (self.path / IMAGE_DIR / f"{i}.png").is_file()]
        if missing:
            raise DataError(f"{self.path / IMAGE_DIR}: {len(missing)} image file(s) missing, e.g. {missing[0]}.png")

    @property
    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = connect(self._db)
        return con

    # ---- admin token ----------------------------------------------------------------------
    def check_token(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(hash_token(token), self.meta["admin_token_sha256"])

    def rotate_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self.con.execute("UPDATE meta SET value = ? WHERE key = 'admin_token_sha256'", (hash_token(token),))
        self.meta["admin_token_sha256"] = hash_token(token)
        return token

    # ---- raters ---------------------------------------------------------------------------
    def rater(self, rater: str) -> sqlite3.Row | None:
        return self.con.execute("SELECT * FROM raters WHERE id = ?", (rater,)).fetchone()

    def sign_in(self, rater: str, specialty: str, years: float, consent: bool, user_agent: str = "") -> tuple[sqlite3.Row, bool]:
        """Register a rater, or find them again (resume); returns (row, resumed)."""
        if not consent:
            raise StudyError(422, "consent is required to take part: tick the consent box on the first page")
        if not isinstance(rater, str) or not RATER_RE.match(rater):
            raise StudyError(
                422, "rater id must be 1-64 characters: letters, digits and . _ @ - (a pseudonym, not your name)"
            )
        if specialty not in SPECIALTIES:
            raise StudyError(422, f"specialty must be one of: {', '.join(SPECIALTIES)}")
        if not isinstance(years, (int, float)) or not 0 <= years <= 70:
            raise StudyError(422, "years of experience must be a number from 0 to 70")
        with self._write:
            cur = self.con.execute(
                "INSERT OR IGNORE INTO raters (id, specialty, years, consented_at, user_agent) VALUES (?, ?, ?, ?, ?)",
                (rater, specialty, float(years), now(), user_agent[:300]),
            )
        return self.rater(rater), cur.rowcount == 0

    def require_rater(self, rater: str | None) -> sqlite3.Row:
        if not rater:
            raise StudyError(401, "no rater: sign in first")
        row = self.rater(rater)
        if row is None:
            raise StudyError(404, f"unknown rater {rater!r}: sign in first (POST /api/raters)")
        return row

    # ---- rating ---------------------------------------------------------------------------
    def progress(self, rater: str) -> dict:
        """Next image for this rater and how far they are; the key is not in here."""
        answered = {r[0] for r in self.con.execute("SELECT image FROM answers WHERE rater = ?", (rater,))}
        todo = [i for i in rater_order(self.image_ids, rater, self.seed) if i not in answered]
        total = len(self.image_ids)
        return {
            "rater": rater,
            "answered": total - len(todo),
            "total": total,
            "done": not todo,
            "image": todo[0] if todo else None,
            "preload": todo[1] if len(todo) > 1 else None,
        }

    def answer(self, rater: str, image: str, answer: str, confidence: int, elapsed_ms: int | None = None) -> dict:
        """Store one answer at once (autocommit, WAL, synchronous=FULL)."""
        self.require_rater(rater)
        if image not in self.image_ids:
            raise StudyError(404, f"unknown image id {image!r}: not part of this study")
        if answer not in ANSWERS:
            raise StudyError(422, f"answer must be 'real' or 'generated', got {answer!r}")
        if isinstance(confidence, bool) or not isinstance(confidence, int) or not 1 <= confidence <= 5:
            raise StudyError(422, f"confidence must be an integer from 1 to 5, got {confidence!r}")
        if elapsed_ms is not None and (not isinstance(elapsed_ms, int) or elapsed_ms < 0):
            raise StudyError(422, f"elapsed_ms must be a non-negative integer, got {elapsed_ms!r}")
        position = rater_order(self.image_ids, rater, self.seed).index(image) + 1
        try:
            with self._write:
                self.con.execute(
                    "INSERT INTO answers (rater, image, answer, confidence, position, elapsed_ms, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rater, image, answer, confidence, position, elapsed_ms, now()),
                )
        except sqlite3.IntegrityError:
            raise StudyError(409, f"rater {rater!r} has already answered image {image!r}; answers cannot be changed") from None
        return self.progress(rater)

    def image_path(self, image: str) -> Path:
        if image not in self.image_ids:
            raise StudyError(404, f"unknown image id {image!r}: not part of this study")
        return self.path / IMAGE_DIR / f"{image}.png"

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
