"""Split Fashion-MNIST renditions plus printed glyphs: 30 classes from three sources (issue 17's fourth candidate).

The stream joins three sources, as the "5-datasets" benchmark of the prompt papers joins Fashion-MNIST, MNIST and
notMNIST (DualPrompt, Wang et al., ECCV 2022, section 5):

* labels 0-9: ``split_fmnist_styled``'s garments (the continual half, ``train_per_class`` each; the first
  ``test_per_class`` of each test class), in ``style`` (default ``mixed``: rotated, upside down or
  patch-shuffled, one per image);
* labels 10-19: the digits 0-9, and labels 20-29: the letters A-J (notMNIST's ten), printed by committed code in
  the 55 Latin typefaces of three Debian font packages (:data:`FONT_FILES`), one face drawn per image, each image
  rotated (+-15 degrees), sheared (+-0.2), scaled (0.85-1.1) and shifted (+-2 pixels) by a random affine map.
  Training and test glyphs are different draws (seeds 0 and 1), so a test image is never a training image,
  though both use every face.

Neither source is in the CPU backbones' pretraining (Fashion-MNIST's other half: clean garments), so the stream
is new to the backbone in two ways: renditions of known kinds of image, and a domain it never saw. With 30
classes the stream runs 10 tasks of 3 (ImageNet-R's N=10 in the paper), against 5 of 2 for ``split_fmnist``: the
last task, whose images the masked-logit methods often send to older heads (docs/results/mini/DESIGN.md section
6), weighs a tenth of the final accuracy instead of a fifth.

Printing is deterministic: each (character, face) is drawn once by Pillow's FreeType at 56 pixels, then every
image is a bilinear affine warp of its face's drawing (``torch.nn.functional.grid_sample``) averaged down to 28
pixels. The glyph arrays' sha256 goes into the benchmark's ``info``, so records name the images they saw.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.base import BENCHMARKS, ArrayDataset, BenchmarkInfo, CILBenchmark, make_benchmark
from benchmarks.fmnist import CLASS_NAMES, halves, load_fmnist, per_class_subset, to_tensor
from benchmarks.fmnist_styles import StyledFMNISTConfig, styled
from core.config import check
from core.errors import UserError

CHARACTERS = "0123456789ABCDEFGHIJ"
FONT_PACKAGES = {
    "fonts-urw-base35": ("/usr/share/fonts/opentype/urw-base35", (
        "C059-BdIta", "C059-Bold", "C059-Italic", "C059-Roman", "NimbusMonoPS-Bold", "NimbusMonoPS-BoldItalic",
        "NimbusMonoPS-Italic", "NimbusMonoPS-Regular", "NimbusRoman-Bold", "NimbusRoman-BoldItalic",
        "NimbusRoman-Italic", "NimbusRoman-Regular", "NimbusSans-Bold", "NimbusSans-BoldItalic",
        "NimbusSans-Italic", "NimbusSans-Regular", "NimbusSansNarrow-Bold", "NimbusSansNarrow-BoldOblique",
        "NimbusSansNarrow-Oblique", "NimbusSansNarrow-Regular", "P052-Bold", "P052-BoldItalic", "P052-Italic",
        "P052-Roman", "URWBookman-Demi", "URWBookman-DemiItalic", "URWBookman-Light", "URWBookman-LightItalic",
        "URWGothic-Book", "URWGothic-BookOblique", "URWGothic-Demi", "URWGothic-DemiOblique", "Z003-MediumItalic",
    ), ".otf"),
    "fonts-liberation": ("/usr/share/fonts/truetype/liberation", tuple(
        f"Liberation{family}-{face}" for family in ("Mono", "Sans", "SansNarrow", "Serif")
        for face in ("Bold", "BoldItalic", "Italic", "Regular")), ".ttf"),
    "fonts-dejavu-core": ("/usr/share/fonts/truetype/dejavu", (
        "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSerif",
        "DejaVuSerif-Bold"), ".ttf"),
}
FONT_FILES = tuple(f"{folder}/{name}{ext}" for folder, names, ext in FONT_PACKAGES.values() for name in names)
GLYPH_SEEDS = {"train": 0, "test": 1}  # fixed: the glyph images are data, not a function of the job's seed
CANVAS = 56  # pixels a face is drawn at, twice the images' 28


def font_paths() -> tuple[Path, ...]:
    """The 55 font files; one line naming the packages to install when any is missing."""
    missing = [p for p in FONT_FILES if not Path(p).exists()]
    if missing:
        raise UserError(f"glyph fonts not found (e.g. {missing[0]}): install them with 'apt-get install "
                        f"{' '.join(FONT_PACKAGES)}'")
    return tuple(Path(p) for p in FONT_FILES)


@functools.cache
def faces() -> torch.Tensor:
    """(characters, fonts, 56, 56) float drawings, each character centred by its ink box at 40 px."""
    from PIL import Image, ImageDraw, ImageFont

    out = np.zeros((len(CHARACTERS), len(FONT_FILES), CANVAS, CANVAS), dtype=np.float32)
    for j, path in enumerate(font_paths()):
        font = ImageFont.truetype(str(path), 40)
        for i, ch in enumerate(CHARACTERS):
            img = Image.new("L", (CANVAS, CANVAS), 0)
            draw = ImageDraw.Draw(img)
            left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
            draw.text(((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top), ch, fill=255,
                      font=font)
            out[i, j] = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(out)


@functools.cache
def glyphs(split: str, per_class: int) -> tuple[torch.Tensor, np.ndarray]:
    """(images (N, 1, 28, 28), labels 0-19) of ``per_class`` printed glyphs per character, for ``split``."""
    drawn = faces()
    rng = np.random.default_rng(GLYPH_SEEDS[split])
    n = len(CHARACTERS) * per_class
    labels = np.repeat(np.arange(len(CHARACTERS)), per_class)
    font = rng.integers(len(FONT_FILES), size=n)
    angle = np.deg2rad(rng.uniform(-15, 15, size=n))
    shear = rng.uniform(-0.2, 0.2, size=n)
    scale = rng.uniform(0.85, 1.1, size=n)
    shift = rng.uniform(-2, 2, size=(n, 2)) * 2 / 28  # pixels of the 28-pixel image, in grid units
    cos, sin = np.cos(angle), np.sin(angle)
    # output -> input coordinates (affine_grid's convention): the inverse of rotate-shear-scale, then the shift
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos / scale, (-sin + shear) / scale
    theta[:, 1, 0], theta[:, 1, 1] = sin / scale, cos / scale
    theta[:, :, 2] = -shift
    src = drawn[torch.from_numpy(labels), torch.from_numpy(font)].unsqueeze(1)
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, CANVAS, CANVAS], align_corners=False)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    images = F.avg_pool2d(warped, 2).clamp_(0, 1)
    # 8-bit, as Fashion-MNIST's images are stored, so both sources have the same precision
    images = torch.round(images * 255) / 255
    return images.contiguous(), labels


def glyph_sha256(per_class: dict[str, int]) -> str:
    h = hashlib.sha256()
    for split, n in sorted(per_class.items()):
        x, y = glyphs(split, n)
        h.update((x * 255).round().to(torch.uint8).numpy().tobytes())
        h.update(y.astype(np.int64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class GlyphsConfig(StyledFMNISTConfig):
    """``split_fmnist_styled``'s fields (garments in ``style``), with 10 tasks and 300 images per class by default.

    Attributes:
        glyph_classes: how many of the printed characters join the garments, the first of ``0-9``, ``A-J``
            (20: all; 10: the digits). The images of a character do not depend on how many others are printed.

    ``train_per_class`` and ``test_per_class`` apply to every class (the glyphs' test images are printed, the
    garments' are the first of each class of Fashion-MNIST's test set).
    """

    n_tasks: int = 10
    style: str = "mixed"
    train_per_class: int | None = 300
    test_per_class: int | None = 300
    glyph_classes: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.train_per_class is not None and self.test_per_class is not None,
              "train_per_class and test_per_class must be set: the glyphs are printed per class")
        check(1 <= self.glyph_classes <= len(CHARACTERS),
              f"glyph_classes must be 1-{len(CHARACTERS)}, got {self.glyph_classes}")

    def validate_paths(self) -> None:
        super().validate_paths()
        font_paths()


GARMENTS = len(CLASS_NAMES)
GLYPH_NAMES = [f"digit {c}" for c in CHARACTERS[:10]] + [f"letter {c}" for c in CHARACTERS[10:]]


def arrays(cfg: GlyphsConfig) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """{split: (images (N, 1, 28, 28), labels)}: garments 0-9 in ``cfg.style``, then the first ``glyph_classes``
    characters (digits 10-19, letters 20-29)."""
    raw = load_fmnist(cfg.root)
    _, continual = halves(len(raw["train_labels"]))
    per_class = {"train": cfg.train_per_class, "test": cfg.test_per_class}
    out = {}
    for split, pool in (("train", continual), ("test", np.arange(len(raw["test_labels"])))):
        idx = per_class_subset(raw[f"{split}_labels"], pool, per_class[split])
        gx, gy = glyphs(split, per_class[split])
        gx, gy = gx[gy < cfg.glyph_classes], gy[gy < cfg.glyph_classes]
        out[split] = (torch.cat([styled(to_tensor(raw[f"{split}_images"][idx]), cfg.style), gx]),
                      np.concatenate([raw[f"{split}_labels"][idx].astype(np.int64), gy + GARMENTS]))
    return out


@BENCHMARKS.register("split_fmnist_glyphs", GlyphsConfig, info=BenchmarkInfo(
    train_size=9000, test_size=9000, n_classes=30,
    data_help="fashion_mnist/ (the four idx files) and the fonts of fonts-urw-base35, fonts-liberation, "
              "fonts-dejavu-core"))
def split_fmnist_glyphs(cfg: GlyphsConfig, seed: int) -> CILBenchmark:
    """10 garments in ``cfg.style`` and ``cfg.glyph_classes`` printed characters, in ``cfg.n_tasks`` tasks."""
    parts = {split: ArrayDataset(x, y) for split, (x, y) in arrays(cfg).items()}
    return make_benchmark(
        parts["train"], parts["test"], n_classes=GARMENTS + cfg.glyph_classes, cfg=cfg, seed=seed,
        class_names=list(CLASS_NAMES) + GLYPH_NAMES[: cfg.glyph_classes], image_shape=(1, 28, 28),
        info={"split": "continual-half", "style": cfg.style, "n_train": len(parts["train"]),
              "n_test": len(parts["test"]), "fonts": len(FONT_FILES),
              "glyphs_sha256": glyph_sha256({"train": cfg.train_per_class, "test": cfg.test_per_class})},
    )
