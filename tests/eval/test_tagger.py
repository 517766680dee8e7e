"""The tagger's parts against hand computations: RoIAlign means on linear ramps, the stage strides of the real
model, the best phrase as tag on a hand-built head output, top-k / threshold / at-least-one, original pixels."""

import pytest
import torch

from fiber_fast.eval.tagger import (
    pool_regions,
    region_feature_dim,
    select_regions,
    stage_strides,
    tag_regions,
    to_original_pixels,
)
from fiber_fast.models import FiberConfig, GroundingOutput, build_fiber


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads contend with the other sessions (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ramp(channels: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A map ``(1, C, H, W)`` with ``f_c(y, x) = a_c x + b_c y + d_c`` and its coefficients ``(C, 3)``."""
    coefficients = torch.randn(channels, 3, generator=torch.Generator().manual_seed(seed))
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    fmap = coefficients[:, 0, None, None] * x + coefficients[:, 1, None, None] * y + coefficients[:, 2, None, None]
    return fmap[None], coefficients


def ramp_mean(coefficients: torch.Tensor, box: list[float], stride: int) -> torch.Tensor:
    """The mean of the ramp over ``box`` (input pixels): its value at the box centre in map coordinates, where
    map cell ``j`` covers input pixels ``[j s, (j + 1) s)`` and its value sits at the cell centre."""
    x = (box[0] + box[2]) / 2 / stride - 0.5
    y = (box[1] + box[3]) / 2 / stride - 0.5
    return coefficients[:, 0] * x + coefficients[:, 1] * y + coefficients[:, 2]


def test_roi_mean_on_a_ramp_is_the_value_at_the_box_centre():
    fmap, coefficients = ramp(3, 12, 16, seed=1)
    boxes = [[12.0, 20.0, 44.0, 52.0], [30.0, 9.0, 101.0, 60.0], [40.0, 40.0, 48.0, 48.0]]
    (pooled,) = pool_regions([fmap], [8], [torch.tensor(boxes)])
    expected = torch.stack([ramp_mean(coefficients, box, 8) for box in boxes])
    assert pooled.shape == (3, 3) and pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


def test_every_stage_is_pooled_at_its_own_stride_and_concatenated_in_stage_order():
    # Two images of 128 x 160: stage maps 16 x 20 (stride 8), 8 x 10 (16), 4 x 5 (32) of 2, 4, 8 channels.
    strides, channels = (8, 16, 32), (2, 4, 8)
    ramps = [[ramp(c, 128 // s, 160 // s, seed=10 * image + s) for c, s in zip(channels, strides, strict=True)]
             for image in range(2)]
    maps = [torch.cat([ramps[0][stage][0], ramps[1][stage][0]]) for stage in range(3)]
    boxes = [[40.0, 36.0, 88.0, 76.0], [56.0, 40.0, 120.0, 72.0]]
    pooled = pool_regions(maps, strides, [torch.tensor(boxes), torch.tensor(boxes[1:])])
    assert [tuple(p.shape) for p in pooled] == [(2, 14), (1, 14)]
    for image, rows in ((0, boxes), (1, boxes[1:])):
        for row, box in enumerate(rows):
            expected = torch.cat([ramp_mean(ramps[image][stage][1], box, s) for stage, s in enumerate(strides)])
            torch.testing.assert_close(pooled[image][row], expected, atol=1e-5, rtol=1e-5)


def test_the_strides_match_the_real_model_maps():
    config = FiberConfig.preset("tiny", stage="fine")
    model = build_fiber(config).eval()
    assert stage_strides(config.image) == (8, 16, 32)
    assert region_feature_dim(config.image) == 64 + 128 + 256
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 160), torch.tensor([[0, 5, 2]]), torch.ones(1, 3, dtype=torch.long))
    assert [tuple(f.shape) for f in out.image_features] == [(1, 64, 12, 20), (1, 128, 6, 10), (1, 256, 3, 5)]
    assert sum(f.shape[1] for f in out.image_features) == region_feature_dim(config.image)


def head_output(probabilities: torch.Tensor, anchors: torch.Tensor) -> GroundingOutput:
    """A one-image head output whose token probabilities are ``probabilities (A, T)``, boxes the anchors
    themselves (zero deltas) and centerness 0.5."""
    count = anchors.shape[0]
    return GroundingOutput(anchors=anchors, num_anchors_per_level=[count], cls_logits=probabilities.logit()[None],
                           box_regression=torch.zeros(1, count, 4), centerness=torch.zeros(1, count))


# Phrases over 6 text positions: 0 owns token 1, 1 owns tokens 2-3, 2 owns token 4 (0 and 5: <s>, </s>).
TOKEN_MAP = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.float32)
ANCHORS = torch.tensor([[10.0, 10.0, 50.0, 50.0],   # A: the best phrase is 0 by the mean, not the max token
                        [70.0, 10.0, 110.0, 50.0],  # B: elsewhere, phrase 2
                        [11.0, 11.0, 51.0, 51.0],   # C: A shifted by one pixel, weaker: suppressed
                        [10.0, 70.0, 50.0, 110.0]])  # D: elsewhere, phrase 1, weak
PROBABILITIES = torch.tensor([[0.01, 0.60, 0.95, 0.10, 0.55, 0.01],
                              [0.01, 0.20, 0.30, 0.30, 0.80, 0.01],
                              [0.01, 0.50, 0.50, 0.50, 0.10, 0.01],
                              [0.01, 0.05, 0.30, 0.20, 0.05, 0.01]])


def test_each_box_is_tagged_with_its_best_phrase():
    (chosen,) = tag_regions(head_output(PROBABILITIES, ANCHORS), TOKEN_MAP, torch.tensor([[128, 128]]), top_k=10,
                            score_threshold=0.0)
    # Hand computation: phrase probability = mean of its tokens'; score = sqrt(p * sigmoid(0)).
    phrase = torch.stack([PROBABILITIES[:, 1], PROBABILITIES[:, 2:4].mean(1), PROBABILITIES[:, 4]], dim=1)
    best, tag = phrase.max(dim=1)
    kept = [1, 0, 3]  # by score: B (0.80), A (0.60), D (0.25); C overlaps A (IoU 0.91) and scores less
    torch.testing.assert_close(chosen.boxes, ANCHORS[kept])
    assert chosen.labels.tolist() == tag[kept].tolist() == [2, 0, 1]
    torch.testing.assert_close(chosen.scores, (best[kept] * 0.5).sqrt())


def test_top_k_threshold_and_at_least_one_box():
    head = head_output(PROBABILITIES, ANCHORS)
    sizes = torch.tensor([[128, 128]])
    assert tag_regions(head, TOKEN_MAP, sizes, top_k=2, score_threshold=0.0)[0].labels.tolist() == [2, 0]
    assert tag_regions(head, TOKEN_MAP, sizes, top_k=10, score_threshold=0.5)[0].labels.tolist() == [2, 0]
    (only,) = tag_regions(head, TOKEN_MAP, sizes, top_k=10, score_threshold=0.99)
    assert only.labels.tolist() == [2]  # nothing reaches 0.99: the best box stays
    torch.testing.assert_close(only.boxes, ANCHORS[1:2])
    with pytest.raises(ValueError, match="top_k"):
        select_regions(tag_regions(head, TOKEN_MAP, sizes, 1, 0.0)[0], top_k=0, score_threshold=0.0,
                       nms_threshold=0.6)


def test_boxes_go_back_to_original_pixels():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 49.0, 99.0]])
    # Resized (h, w) = (100, 50) from an original (300, 200): x times 4, y times 3.
    expected = torch.tensor([[40.0, 60.0, 120.0, 120.0], [0.0, 0.0, 196.0, 297.0]])
    torch.testing.assert_close(to_original_pixels(boxes, (100, 50), (300, 200)), expected)
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        to_original_pixels(boxes[:, :3], (100, 50), (300, 200))
