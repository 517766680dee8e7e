"""Category prompts and COCO mAP against pycocotools' numbers on tiny hand-built cases."""

import json

import pytest
import torch

from fiber_fast.data import train_tokenizer
from fiber_fast.eval import detection
from fiber_fast.eval.grounding import Detections


def tiny_coco() -> dict:
    """Two images, two categories, three large boxes (area > 96^2)."""
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 400, "width": 400},
                   {"id": 2, "file_name": "b.jpg", "height": 400, "width": 400}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200]},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 200, 150, 150]},
                        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [50, 50, 300, 120]}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "traffic light"}],
    }


def test_build_prompt_spans():
    prompt, spans = detection.build_prompt(["cat", " traffic light ", "dog"])
    assert prompt == "cat. traffic light. dog."
    assert [prompt[s:e] for s, e in spans] == ["cat", "traffic light", "dog"]
    with pytest.raises(ValueError, match="names"):
        detection.build_prompt(["cat", ""])


def test_category_token_map_covers_each_name(tmp_path):
    names = ["circle", "red square", "triangle"]
    tokenizer = train_tokenizer(["a red circle", "a blue square and a triangle"] * 5, tmp_path, vocab_size=300)
    encoding, token_map = detection.category_token_map(tokenizer, names)
    assert token_map.shape == (3, encoding["input_ids"].shape[1])
    for row, name in zip(token_map, names, strict=True):
        ids = encoding["input_ids"][0][row.bool()]
        assert tokenizer.decode(ids).strip() == name
    assert token_map[:, 0].sum() == 0 and token_map[:, -1].sum() == 0  # <s> and </s> belong to no category
    with pytest.raises(ValueError, match="no tokens"):
        detection.category_token_map(tokenizer, names, max_length=4)


def test_perfect_detections_give_ap_one(tmp_path):
    gt = tiny_coco()
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    stats = detection.coco_map(gt, results)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AP_small"] == -1.0  # no small objects: pycocotools' "nothing to average"
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert detection.coco_map(path, results)["AP"] == pytest.approx(1.0)  # from a file too
    assert detection.coco_map(gt, [])["AP"] == 0.0


def test_hand_computed_ap():
    # Category 1 (2 boxes): hit (0.9), false positive (0.8), hit (0.7): precision 1, 1/2, 2/3 at recall
    # 1/2, 1/2, 1. Interpolated precision is 1 for the 51 recall thresholds 0..0.50 and 2/3 for the 50 above:
    # AP = (51 + 50 * 2/3) / 101 at every IoU threshold (hits are exact, the false positive overlaps nothing).
    # Category 2: its one box found at IoU 0.62 (AP 1 at thresholds .50-.60, 0 from .65): AP = 3/10.
    gt = tiny_coco()
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [380, 0, 20, 20], "score": 0.8},
               {"image_id": 1, "category_id": 1, "bbox": [200, 200, 150, 150], "score": 0.7},
               {"image_id": 2, "category_id": 2, "bbox": [50, 50, 186, 120], "score": 0.5}]  # IoU 186/300
    ap_cat1 = (51 + 50 * 2 / 3) / 101
    stats = detection.coco_map(gt, results)
    assert stats["AP"] == pytest.approx((ap_cat1 + 0.3) / 2)
    assert stats["AP50"] == pytest.approx((ap_cat1 + 1.0) / 2)
    assert stats["AP75"] == pytest.approx(ap_cat1 / 2)
    only_image_1 = detection.coco_map(gt, results, image_ids=[1])
    assert only_image_1["AP"] == pytest.approx(ap_cat1)  # category 2 has no ground truth there: left out


def test_to_coco_results_scales_to_the_original_image():
    det = Detections(boxes=torch.tensor([[10.0, 20.0, 30.0, 60.0]]), scores=torch.tensor([0.5]),
                     labels=torch.tensor([1]))
    (result,) = detection.to_coco_results(det, image_id=7, category_ids=[3, 9], scale=(2.0, 4.0))
    assert result == {"image_id": 7, "category_id": 9, "bbox": [40.0, 40.0, 80.0, 80.0], "score": 0.5}


def test_bad_ground_truth_raises():
    with pytest.raises(TypeError, match="ground_truth"):
        detection.coco_map({"images": []}, [])
