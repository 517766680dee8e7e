"""A synthetic image-text-box set that a tiny model learns in a few hundred CPU steps.

Each image shows 1-3 coloured shapes (distinct colour+shape pairs) of two sizes on a plain or lightly
textured background. Captions name every shape with its size and colour and relate the first two
("a small red circle to the left of a large blue square, and a small green triangle") or place a lone
one ("a large blue square at the top left"); each shape's phrase ("small red circle") is a character
span of the grounding caption, its box the shape's bounding square. :func:`generate` writes the same
scenes in the three formats the readers take:

    DIR/images/NNNNNN.jpg
    DIR/captions_{train,val}.json     COCO captions (images, annotations[{id, image_id, caption}])
    DIR/shards/{train,val}-NNNNNN.tar webdataset, img2dataset layout: KEY.jpg, KEY.txt, KEY.json
    DIR/grounding_{train,val}.json    MDETR/GLIP: images carry ``caption``, annotations ``bbox`` (xywh)
                                      and ``tokens_positive`` ([[start, end], ...] character spans)
    DIR/tokenizer/                    byte-level BPE trained on the captions (RoBERTa-style HF folder)

Everything follows from ``seed`` (numpy's PCG64): the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (30, 150, 50), "blue": (35, 75, 215),
    "yellow": (235, 200, 20), "purple": (135, 50, 175), "orange": (245, 125, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, tuple[float, float]] = {"small": (0.17, 0.24), "large": (0.34, 0.44)}  # side / image side
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((235, 235, 235), (225, 220, 205), (210, 220, 230), (200, 200, 200))
RELATIONS: dict[str, str] = {"to the left of": "to the right of", "to the right of": "to the left of",
                             "above": "below", "below": "above"}
SHAPE_COUNTS, SHAPE_COUNT_P = (1, 2, 3), (0.2, 0.4, 0.4)


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its words and its bounding square ``(x0, y0, side)`` in pixels."""

    size: str
    colour: str
    kind: str
    x0: int
    y0: int
    side: int

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    @property
    def bbox_xywh(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.side), float(self.side)]


def relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is relative to ``b``, along the axis where their centres differ most."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def describe(shapes: list[Shape]) -> tuple[str, list[tuple[int, int]]]:
    """The caption naming ``shapes`` in order, and each shape's phrase span ``(start, end)`` in it."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0

    def add(text: str, phrase_of: Shape | None = None) -> None:
        nonlocal length
        if phrase_of is not None:
            spans.append((length, length + len(text)))
        parts.append(text)
        length += len(text)

    add("a ")
    add(shapes[0].phrase, shapes[0])
    if len(shapes) >= 2:
        add(f" {relation(shapes[0], shapes[1])} a ")
        add(shapes[1].phrase, shapes[1])
    for extra in shapes[2:]:
        add(", and a ")
        add(extra.phrase, extra)
    return "".join(parts), spans


def _overlaps(a: tuple[int, int, int], b: tuple[int, int, int], margin: int) -> bool:
    return not (a[0] + a[2] + margin <= b[0] or b[0] + b[2] + margin <= a[0]
                or a[1] + a[2] + margin <= b[1] or b[1] + b[2] + margin <= a[1])


def place(shape: Shape, size: int) -> str:
    """Where a lone shape is: "at the top left", "at the bottom", "in the middle", ... (image thirds)."""
    column = ("left", "", "right")[min(2, int(3 * shape.centre[0] / size))]
    row = ("top", "", "bottom")[min(2, int(3 * shape.centre[1] / size))]
    words = " ".join(w for w in (row, column) if w)
    return f"at the {words}" if words else "in the middle"


def sample_shapes(rng: np.random.Generator, size: int) -> list[Shape]:
    """1-3 non-overlapping shapes (1 with p 0.2, 2 and 3 with 0.4) with distinct (colour, kind) pairs."""
    count = int(rng.choice(SHAPE_COUNTS, p=SHAPE_COUNT_P))
    colours, kinds, sizes = list(COLOURS), list(SHAPES), list(SIZES)
    pairs = rng.permutation(len(colours) * len(kinds))[:count]
    shapes: list[Shape] = []
    placed: list[tuple[int, int, int]] = []
    for pair in pairs:
        size_word = sizes[int(rng.integers(len(sizes)))]
        low, high = SIZES[size_word]
        side = max(4, int(round(rng.uniform(low, high) * size)))
        for _ in range(30):
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if not any(_overlaps((x0, y0, side), other, margin=2) for other in placed):
                placed.append((x0, y0, side))
                shapes.append(Shape(size_word, colours[pair // len(kinds)], kinds[pair % len(kinds)], x0, y0, side))
                break
    return shapes


def draw(rng: np.random.Generator, size: int, shapes: list[Shape]) -> Image.Image:
    """The scene: a plain or lightly noisy background and the shapes, as an RGB image of ``size``x``size``."""
    background = np.array(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dtype=np.float32)
    if rng.random() < 0.5:  # light grain: one N(0, 6) offset per pixel, the same on the three channels
        pixels = np.clip(rng.standard_normal((size, size, 1), dtype=np.float32) * 6.0 + background, 0, 255)
    else:
        pixels = np.broadcast_to(background, (size, size, 3))
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    canvas = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.x0, shape.y0, shape.x0 + shape.side - 1, shape.y0 + shape.side - 1
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            canvas.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "square":
            canvas.rectangle((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "triangle":
            canvas.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # diamond
            canvas.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    return image


Mention = tuple[Shape, tuple[int, int]]  # a shape and its phrase's character span in a caption


def captions_for(rng: np.random.Generator, shapes: list[Shape], size: int) -> list[tuple[str, list[Mention]]]:
    """Two captions of one scene with their mentions: shapes in a random order, then reversed.

    The first is the grounding caption. A lone shape is placed instead ("a small red circle at the top
    left" and "at the top left, one small red circle"), so its captions still tell the images apart.
    """
    order = [shapes[i] for i in rng.permutation(len(shapes))]
    if len(order) == 1:
        lone, phrase = order[0], order[0].phrase
        where = place(lone, size)
        return [(f"a {phrase} {where}", [(lone, (2, 2 + len(phrase)))]),
                (f"{where}, one {phrase}", [(lone, (len(where) + 6, len(where) + 6 + len(phrase)))])]
    captions = []
    for shapes_in_order in (order, order[::-1]):
        caption, spans = describe(shapes_in_order)
        captions.append((caption, list(zip(shapes_in_order, spans, strict=True))))
    return captions


@dataclass
class Scene:
    image_id: int
    file_name: str
    jpeg: bytes
    shapes: list[Shape]
    captions: list[tuple[str, list[Mention]]]


def make_scenes(images: int, size: int, seed: int, quality: int = 90) -> list[Scene]:
    """``images`` scenes (ids 1..images), each drawn and JPEG-encoded in memory."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(images):
        shapes = sample_shapes(rng, size)
        buffer = io.BytesIO()
        draw(rng, size, shapes).save(buffer, format="JPEG", quality=quality)
        image_id = index + 1
        captions = captions_for(rng, shapes, size)
        scenes.append(Scene(image_id, f"{image_id:06d}.jpg", buffer.getvalue(), shapes, captions))
    return scenes


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n", encoding="utf-8")


def captions_json(scenes: list[Scene], size: int) -> dict:
    """COCO-captions JSON: one annotation per caption, ids ``image_id * 10 + k``."""
    return {
        "images": [{"id": s.image_id, "file_name": s.file_name, "height": size, "width": size} for s in scenes],
        "annotations": [{"id": s.image_id * 10 + k, "image_id": s.image_id, "caption": caption}
                        for s in scenes for k, (caption, _) in enumerate(s.captions)],
    }


def grounding_json(scenes: list[Scene], size: int) -> dict:
    """MDETR/GLIP grounding JSON: one entry per image with its first caption, one annotation per shape."""
    images, annotations = [], []
    for scene in scenes:
        caption, mentions = scene.captions[0]
        images.append({"id": scene.image_id, "original_img_id": scene.image_id, "file_name": scene.file_name,
                       "height": size, "width": size, "caption": caption, "tokens_negative": []})
        for rank, (shape, span) in enumerate(mentions):
            annotations.append({
                "id": scene.image_id * 10 + rank, "image_id": scene.image_id, "bbox": shape.bbox_xywh,
                "area": float(shape.side * shape.side), "iscrowd": 0, "tokens_positive": [list(span)],
                "category_id": SHAPES.index(shape.kind) + 1, "phrase": shape.phrase})
    categories = [{"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(SHAPES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_shards(scenes: list[Scene], size: int, out: Path, prefix: str, shard_size: int) -> list[Path]:
    """img2dataset-layout tar shards: one sample per (image, caption), KEY = ``<image_id>_<k>``."""
    samples = [(scene, k) for scene in scenes for k in range(len(scene.captions))]
    paths = []
    for shard, start in enumerate(range(0, len(samples), shard_size)):
        path = out / f"{prefix}-{shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for scene, k in samples[start:start + shard_size]:
                key = f"{scene.image_id:06d}_{k}"
                caption = scene.captions[k][0]
                meta = {"key": key, "caption": caption, "image_id": scene.image_id,
                        "caption_id": scene.image_id * 10 + k, "width": size, "height": size, "status": "success"}
                for suffix, data in ((".jpg", scene.jpeg), (".txt", caption.encode()),
                                     (".json", json.dumps(meta, separators=(",", ":")).encode())):
                    info = tarfile.TarInfo(key + suffix)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def generate(out: str | Path, images: int = 1200, size: int = 128, seed: int = 0, val_images: int | None = None,
             shard_size: int = 250, vocab_size: int = 1000) -> dict:
    """Write the synthetic set into ``out`` (created; existing files are overwritten).

    ``val_images`` defaults to ``images // 6`` (at least 1 when ``images >= 2``); the rest are train.
    Returns a summary: counts per split and format, and the seconds spent drawing and writing.
    """
    from fiber_fast.data.tokenizer import train_tokenizer

    if images < 2:
        raise ValueError(f"images must be >= 2 (a train and a val image), got {images}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 sample, got {shard_size}")
    val = max(1, images // 6) if val_images is None else val_images
    if not 1 <= val < images:
        raise ValueError(f"val_images must be in [1, images), got {val} with images={images}")
    started = time.perf_counter()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    scenes = make_scenes(images, size, seed)
    drawn = time.perf_counter()
    for scene in scenes:
        (out / "images" / scene.file_name).write_bytes(scene.jpeg)
    splits = {"train": scenes[:images - val], "val": scenes[images - val:]}
    summary: dict = {"out": str(out), "images": images, "size": size, "seed": seed}
    for split, part in splits.items():
        _write_json(out / f"captions_{split}.json", captions_json(part, size))
        _write_json(out / f"grounding_{split}.json", grounding_json(part, size))
        shards = write_shards(part, size, out / "shards", split, shard_size)
        summary[split] = {"images": len(part), "captions": sum(len(s.captions) for s in part),
                          "boxes": sum(len(s.shapes) for s in part), "shards": len(shards)}
    written = time.perf_counter()
    train_captions = [caption for scene in splits["train"] for caption, _ in scene.captions]
    tokenizer = train_tokenizer(train_captions, out / "tokenizer", vocab_size=vocab_size)
    summary["vocab_size"] = len(tokenizer)
    summary["seconds"] = {"draw": drawn - started, "write": written - drawn,
                          "tokenizer": time.perf_counter() - written, "total": time.perf_counter() - started}
    return summary
