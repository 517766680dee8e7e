"""Coarse and fine transforms: sizes against hand-computed values, boxes moved with the pixels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from fiber_fast.data import IMAGENET_MEAN, IMAGENET_STD, CoarseTransform, FineTransform, resized_size


@pytest.mark.parametrize("height,width,shorter,max_size,expected", [
    (480, 640, 800, 1333, (800, 1066)),     # 640 * 800 / 480 = 1066.7 -> 1066
    (1000, 300, 480, 1333, (1333, 400)),    # 1600 > 1333: shorter = round(1333 * 300 / 1000) = 400
    (100, 200, 150, 250, (125, 250)),       # 300 > 250: shorter = round(250 * 100 / 200) = 125
    (64, 64, 128, 256, (128, 128)),
    (128, 96, 96, None, (128, 96)),         # already the size
])
def test_resized_size_hand_computed(height: int, width: int, shorter: int, max_size: int | None,
                                    expected: tuple[int, int]) -> None:
    assert resized_size(height, width, shorter, max_size) == expected


def _rectangle_image(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    return image


def test_fine_transform_moves_boxes_with_the_image() -> None:
    """Box [10, 20, 110, 60] in a 200x100 image, shorter side 150 (scale 1.5) -> [15, 30, 165, 90];
    the bright pixels of the resized image lie in the moved box (and on the left: no flip)."""
    image = _rectangle_image(200, 100, (10, 20, 110, 60))
    pixels, boxes, size = FineTransform([150], max_size=400)(image, torch.tensor([[10.0, 20.0, 110.0, 60.0]]))
    assert size == (150, 300) and pixels.shape == (3, 150, 300) and pixels.dtype == torch.float32
    torch.testing.assert_close(boxes, torch.tensor([[15.0, 30.0, 165.0, 90.0]]))
    bright = pixels[0] > 0.0  # normalised: black is negative, white positive
    ys, xs = torch.nonzero(bright, as_tuple=True)
    found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    assert (found - boxes[0]).abs().max() <= 1.0, found


def test_fine_transform_scale_choice_follows_the_generator() -> None:
    transform = FineTransform([32, 48, 64, 80], max_size=160)
    image = Image.new("RGB", (40, 20))
    box = torch.tensor([[0.0, 0.0, 40.0, 20.0]])
    sizes = {transform(image, box, torch.Generator().manual_seed(s))[2] for s in range(40)}
    assert sizes == {(32, 64), (48, 96), (64, 128), (80, 160)}
    for seed in range(5):
        first = transform(image, box, torch.Generator().manual_seed(seed))
        second = transform(image, box, torch.Generator().manual_seed(seed))
        assert first[2] == second[2]
        torch.testing.assert_close(first[1], box * first[2][0] / 20)


def test_coarse_transform_resizes_crops_and_normalises() -> None:
    colour = (200, 100, 50)
    pixels = CoarseTransform(48)(Image.new("RGB", (96, 64), colour))
    assert pixels.shape == (3, 48, 48) and pixels.dtype == torch.float32
    expected = (torch.tensor(colour) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels[:, 24, 24], expected, atol=1e-5, rtol=0)
    # centre crop of a 72x48 resize: a mark at the right edge (x >= 84 of 96) is cut off
    image = Image.new("RGB", (96, 64))
    ImageDraw.Draw(image).rectangle((88, 0, 95, 63), fill=(255, 255, 255))
    assert float(CoarseTransform(48)(image).max()) < 0.0
    # a mark at x 44..51 -> 33..38.25 after the resize -> 21..26 after cropping 12 columns off
    image = Image.new("RGB", (96, 64))
    ImageDraw.Draw(image).rectangle((44, 0, 51, 63), fill=(255, 255, 255))
    bright = (CoarseTransform(48)(image)[0, 24] > 0).nonzero().flatten().tolist()
    assert 20 <= min(bright) <= 22 and 25 <= max(bright) <= 27, bright


def test_transform_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="min_sizes"):
        FineTransform([])
    with pytest.raises(ValueError, match="max_size"):
        FineTransform([800], max_size=600)
    with pytest.raises(ValueError, match="boxes must be"):
        FineTransform([32])(Image.new("RGB", (8, 8)), torch.zeros(4))
    with pytest.raises(ValueError, match="size"):
        CoarseTransform(0)
