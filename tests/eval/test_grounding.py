"""ATSS head decoding on a hand-made head output, and phrase-grounding recall on boxes with known IoUs."""

import math
from types import SimpleNamespace

import pytest
import torch
from torchvision.ops import box_iou

from fiber_fast.eval import grounding
from fiber_fast.eval.grounding import Detections

ANCHORS = torch.tensor([[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 39.0, 39.0], [50.0, 50.0, 59.0, 59.0]])
# Text positions: 0 = <s>, phrase 0 = tokens 1-2, phrase 1 = token 3.
TOKEN_MAP = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
LOW = -9.0  # sigmoid(-9) = 1.2e-4: below the 0.05 threshold
CLS_LOGITS = torch.tensor([[LOW, 2.0, 0.0, LOW], [LOW, LOW, LOW, 3.0], [LOW, LOW, LOW, LOW]])
CENTERNESS = torch.tensor([0.0, math.log(3.0), 0.0])  # sigmoid: 0.5, 0.75, 0.5
# Anchor 1 (20 wide with +1): dx = 1 / 10 * 20 = +2 px, width * exp(5 ln 2 / 5) = 40 -> x 12..51.
REGRESSION = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 5 * math.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]])


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_decode_hand_made_head_output():
    det = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, image_size=(40, 45))
    # Anchor 1, phrase 1: sqrt(sigmoid(3) * 0.75); box clipped at w - 1 = 44.
    # Anchor 0, phrase 0: sqrt(mean(sigmoid(2), sigmoid(0)) * 0.5); zero deltas give the anchor back.
    assert det.labels.tolist() == [1, 0]
    torch.testing.assert_close(det.boxes, torch.tensor([[12.0, 20.0, 44.0, 39.0], [0.0, 0.0, 9.0, 9.0]]))
    torch.testing.assert_close(det.scores, torch.tensor([math.sqrt(sigmoid(3) * 0.75),
                                                         math.sqrt((sigmoid(2) + 0.5) / 2 * 0.5)]))
    unclipped = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, image_size=(100, 100))
    torch.testing.assert_close(unclipped.boxes[0], torch.tensor([12.0, 20.0, 51.0, 39.0]))


def test_decode_max_aggregation_and_threshold():
    det = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, image_size=(100, 100),
                                 score_agg="max")
    torch.testing.assert_close(det.scores[1], torch.tensor(math.sqrt(sigmoid(2) * 0.5)))
    # Threshold 0: every (anchor, phrase) pair is a candidate: 3 anchors x 2 phrases, no two overlap enough.
    det = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, image_size=(100, 100),
                                 score_threshold=0.0)
    assert det.boxes.shape == (6, 4) and bool((det.scores[:-1] >= det.scores[1:]).all())


def test_nms_per_phrase_and_top_per_level():
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 8.0], [0.0, 0.0, 9.0, 7.0]])
    logits = torch.tensor([[2.0, LOW], [1.0, LOW], [LOW, 0.5]])
    token_map = torch.eye(2)
    zeros = torch.zeros(3, 4)
    det = grounding.decode_image(anchors, logits, zeros, torch.zeros(3), token_map, image_size=(20, 20))
    # Anchor 1 overlaps anchor 0 (IoU 0.9 > 0.6) in the same phrase: suppressed. Anchor 2 is another phrase.
    assert det.labels.tolist() == [0, 1]
    torch.testing.assert_close(det.boxes, anchors[[0, 2]])
    # Levels [2, 1] with one candidate per level: anchor 0 (best of level 0) and anchor 2.
    det = grounding.decode_image(anchors, logits, zeros, torch.zeros(3), token_map, image_size=(20, 20),
                                 num_anchors_per_level=[2, 1], pre_nms_top_n=1, nms_threshold=1.0)
    assert sorted(det.boxes[:, 3].tolist()) == [7.0, 9.0]
    det = grounding.decode_image(anchors, logits, zeros, torch.zeros(3), token_map, image_size=(20, 20),
                                 nms_threshold=1.0, max_detections=2)
    assert det.boxes[:, 3].tolist() == [9.0, 8.0]


def test_decode_batch_matches_per_image():
    head = SimpleNamespace(anchors=ANCHORS, cls_logits=torch.stack([CLS_LOGITS, CLS_LOGITS.flip(0)]),
                           box_regression=torch.stack([REGRESSION, REGRESSION]),
                           centerness=torch.stack([CENTERNESS, CENTERNESS]), num_anchors_per_level=[3])
    out = grounding.decode_batch(head, [TOKEN_MAP, TOKEN_MAP[:1]], torch.tensor([[40, 45], [100, 100]]))
    first = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, (40, 45))
    torch.testing.assert_close(out[0].boxes, first.boxes)
    assert out[1].labels.tolist() == [0]  # only phrase 0 asked for in image 1
    with pytest.raises(ValueError, match="one token map per image"):
        grounding.decode_batch(head, [TOKEN_MAP], torch.tensor([[40, 45], [100, 100]]))


def test_phrases_from_positive_map():
    positive_map = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    box_mask = torch.tensor([True, True, True, False])
    phrases, box_phrase = grounding.phrases_from_positive_map(positive_map, box_mask)
    assert phrases.shape == (2, 4)
    assert box_phrase[0] == box_phrase[2] != box_phrase[1]
    torch.testing.assert_close(phrases[box_phrase], positive_map[:3])


def test_grounding_recall_any_box_protocol():
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0],  # phrase 0: two boxes
                             [0.0, 0.0, 10.0, 10.0],                             # phrase 1
                             [50.0, 50.0, 60.0, 60.0],                           # phrase 2
                             [70.0, 70.0, 80.0, 80.0]])                          # phrase 3: nothing predicted
    gt_phrases = torch.tensor([0, 0, 1, 2, 3])
    rows = [  # (score, box, phrase) with the IoU against the phrase's best ground-truth box
        (0.9, [100.0, 100.0, 110.0, 110.0], 0),  # IoU 0
        (0.8, [20.0, 20.0, 30.0, 25.0], 0),      # IoU 0.5 with the second box: hit at rank 2
        *[(0.7 - 0.1 * i, [0.0, 0.0, 10.0, 4.9], 1) for i in range(5)],  # IoU 0.49: five misses
        (0.1, [0.0, 0.0, 10.0, 10.0], 1),        # IoU 1 at rank 6
        (0.95, [50.0, 50.0, 60.0, 60.0], 2),     # IoU 1 at rank 1
    ]
    order = torch.randperm(len(rows))  # the protocol sorts by score itself
    det = Detections(boxes=torch.tensor([rows[i][1] for i in order]), scores=torch.tensor([rows[i][0] for i in order]),
                     labels=torch.tensor([rows[i][2] for i in order]))
    hits = grounding.grounding_hits(det, gt_boxes, gt_phrases, num_phrases=4, ks=(1, 5, 10))
    assert hits.tolist() == [[False, True, True], [False, False, True], [True, True, True], [False, False, False]]
    got = grounding.grounding_recall([hits[:2], hits[2:]], ks=(1, 5, 10))
    assert got == {"grounding_r1": 0.25, "grounding_r5": 0.5, "grounding_r10": 0.75, "num_phrases": 4}
    with pytest.raises(ValueError, match="no phrases"):
        grounding.grounding_recall([])
    # Merged boxes: phrase 0's truth becomes (0, 0, 30, 30); its second box (20, 20, 30, 25) has IoU 50 / 900.
    # A box covering both true boxes is a hit only there.
    merged_rows = [(0.9, [0.0, 0.0, 30.0, 30.0], 0), (0.8, [20.0, 20.0, 30.0, 25.0], 0)]
    det = Detections(boxes=torch.tensor([r[1] for r in merged_rows]), scores=torch.tensor([r[0] for r in merged_rows]),
                     labels=torch.tensor([r[2] for r in merged_rows]))
    any_box = grounding.grounding_hits(det, gt_boxes[:2], gt_phrases[:2], num_phrases=1, ks=(1, 2))
    merged = grounding.grounding_hits(det, gt_boxes[:2], gt_phrases[:2], num_phrases=1, ks=(1, 2), merge_boxes=True)
    assert any_box.tolist() == [[False, True]] and merged.tolist() == [[True, True]]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="box_regression"):
        grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION[:2], CENTERNESS, TOKEN_MAP, (40, 45))
    with pytest.raises(ValueError, match="sum to A=3"):
        grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP, (40, 45), [1, 1])
    with pytest.raises(ValueError, match="same T"):
        grounding.phrase_scores(CLS_LOGITS, TOKEN_MAP[:, :3])


def test_an_image_without_phrases_decodes_to_nothing():
    det = grounding.decode_image(ANCHORS, CLS_LOGITS, REGRESSION, CENTERNESS, TOKEN_MAP[:0], (40, 45),
                                 score_threshold=0.0)
    assert det.boxes.shape == (0, 4) and det.labels.numel() == 0
    hits = grounding.grounding_hits(det, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), num_phrases=0)
    assert hits.shape == (0, 2)


def test_words_blind_hits_by_hand() -> None:
    # three distinct boxes: phrase 0 owns box a (listed twice), phrase 1 owns b, phrase 2 owns a and c;
    # box d overlaps a with IoU 0.81 (>= 0.5), so a random pick of d also hits the phrases that own a.
    a, b, c, d = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 9, 9]
    boxes = torch.tensor([a, a, b, a, c, d], dtype=torch.float32)
    phrases = torch.tensor([0, 0, 1, 2, 2, 1])
    hits = grounding.words_blind_hits(boxes, phrases, num_phrases=3, ks=(1, 2, 5))
    # n = 4 distinct boxes {a, b, c, d}; phrase 0: good = {a, d} -> 2/4 at K=1, 1 - C(2,2)/C(4,2) = 5/6 at K=2;
    # phrase 1 owns b and d: good = {a, b, d} -> 3/4, 1 at K=2; phrase 2 owns a and c: good = {a, c, d} -> 3/4
    expected = torch.tensor([[2 / 4, 5 / 6, 1.0], [3 / 4, 1.0, 1.0], [3 / 4, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(hits, expected)


def test_words_blind_hits_match_random_picks() -> None:
    generator = torch.Generator().manual_seed(0)
    corner = torch.randint(0, 200, (6, 2), generator=generator).float()
    boxes = torch.cat([corner, corner + torch.randint(5, 60, (6, 2), generator=generator)], dim=1)
    phrases = torch.tensor([0, 1, 1, 2, 3, 3])
    expected = grounding.words_blind_hits(boxes, phrases, num_phrases=4, ks=(1, 3))
    good = torch.stack([(box_iou(boxes, boxes[phrases == p]) >= 0.5).any(dim=1) for p in range(4)])  # (P, 6)
    picks = torch.stack([torch.randperm(6, generator=generator) for _ in range(4000)])  # (trials, 6)
    observed = torch.stack([good[:, picks[:, :k]].any(dim=2).double().mean(dim=1) for k in (1, 3)], dim=1)
    torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)
