"""The runners on a stand-in FiberModel: what they compute equals the metric functions on known inputs."""

import pytest
import torch

from fiber_fast.eval import retrieval, runner

from .standin import ANCHORS, TEXT_TABLE, StandInFiber

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
# (image id, caption token): image 0 has two captions, image 2 two, images 1 and 3 one each.
PAIRS = [(0, 3), (0, 6), (1, 4), (2, 5), (2, 7), (3, 6)]


def coarse_batches(pairs, batch_size):
    """Coarse batches of (image, caption) rows; odd rows are padded by one token."""
    batches = []
    for start in range(0, len(pairs), batch_size):
        part = pairs[start:start + batch_size]
        pixels = torch.zeros(len(part), 3, 2, 2)
        input_ids = torch.ones(len(part), 5, dtype=torch.long)
        attention_mask = torch.zeros(len(part), 5, dtype=torch.long)
        for row, (image, token) in enumerate(part):
            pixels[row, :, 0, 0] = COLOURS[image]
            pixels[row, 0, 1, 0] = image
            length = 4 + (row + start) % 2
            input_ids[row, :length] = torch.tensor([0, token, image, 2, 2][:length])
            attention_mask[row, :length] = 1
        batches.append({"pixel_values": pixels, "input_ids": input_ids, "attention_mask": attention_mask,
                        "image_ids": torch.tensor([image for image, _ in part])})
    return batches


def direct_recall(ks):
    """The metric on the features the stand-in defines, without the runner."""
    normalise = torch.nn.functional.normalize
    return retrieval.retrieval_recall(normalise(COLOURS, dim=1), normalise(TEXT_TABLE[[t for _, t in PAIRS]], dim=1),
                                      torch.tensor([i for i, _ in PAIRS]), ks=ks)


def test_embeddings_encode_each_image_once():
    model = StandInFiber()
    emb = runner.compute_retrieval_embeddings(model, coarse_batches(PAIRS, 4), keep_inputs=True)
    assert emb.image_ids.tolist() == [0, 1, 2, 3]
    assert emb.text_image_index.tolist() == [i for i, _ in PAIRS]
    # Batch 1 rows (0, 0, 1, 2): 3 new images; batch 2 rows (2, 3): 1 new image; texts all once.
    assert model.image_rows == 4 and model.text_rows == 6
    assert [t.tolist() for t in emb.texts[:2]] == [[0, 3, 0, 2], [0, 6, 0, 2, 2]]
    torch.testing.assert_close(emb.pixel_values[:, :, 0, 0], COLOURS)


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_retrieval_runner_equals_the_metric_and_reranks(batch_size):
    ks = (1, 2, 5)
    got = runner.evaluate_retrieval(StandInFiber(), coarse_batches(PAIRS, batch_size), ks=ks, rerank_k=2,
                                    block_size=2, pairs_per_call=3)
    expected = direct_recall(ks)
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert expected["t2i_r1"] < 1  # the dual encoder is imperfect here ...
    # ... and the oracle ITM puts every match found in the top 2 first.
    assert got["rerank_t2i_r1"] == pytest.approx(expected["t2i_r2"])
    assert got["rerank_i2t_r1"] == pytest.approx(expected["i2t_r2"])
    assert got["num_images"] == 4 and got["num_texts"] == 6


def fine_batch(input_ids, boxes, positive_map):
    batch = len(input_ids)
    return {"pixel_values": torch.zeros(batch, 3, 64, 64), "pixel_mask": torch.ones(batch, 64, 64, dtype=torch.bool),
            "image_sizes": torch.tensor([[50, 50]] * batch), "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.ones(batch, len(input_ids[0]), dtype=torch.long),
            "boxes": torch.stack(boxes), "box_mask": torch.stack([b.abs().sum(1) > 0 for b in boxes]),
            "positive_map": torch.tensor(positive_map, dtype=torch.float32),
            "image_ids": torch.arange(batch) + 10}


def test_grounding_runner():
    # Image 10: phrase "5" boxed at anchor 1 (its best anchor: hit at 1), phrase "6" boxed at anchor 3 (its second
    # anchor: hit at 5 only). Image 11: phrase "7 7" boxed at anchor 0 (hit at 1). R@1 = 2/3, R@5 = 1.
    batch = fine_batch([[0, 5, 6, 2], [0, 7, 7, 2]],
                       [ANCHORS[[1, 3]], torch.stack([ANCHORS[0], torch.zeros(4)])],
                       [[[0, 1, 0, 0], [0, 0, 1, 0]], [[0, 1, 1, 0], [0, 0, 0, 0]]])
    got = runner.evaluate_grounding(StandInFiber(), [batch])
    assert got == pytest.approx({"grounding_r1": 2 / 3, "grounding_r5": 1.0, "num_phrases": 3})


def test_detection_runner():
    # Prompt "A. B. C." = ids [0, 5, 6, 7, 2]: A (id 5) is found at anchor 1, where its box is; C (id 7) is
    # predicted at anchor 0 but boxed at anchor 3; B has no ground truth. AP = mean(1, 0) = 0.5.
    # Images are 100x100 originals resized to 50x50: boxes scale by 2 (anchor 1 -> xyxy 20..58).
    ground_truth = {
        "images": [{"id": 10, "height": 100, "width": 100, "file_name": "x.jpg"}],
        "annotations": [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [20.0, 20.0, 38.0, 38.0]},
                        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0.0, 60.0, 38.0, 38.0]}],
        "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}, {"id": 3, "name": "C"}],
    }
    prompt = {"input_ids": torch.tensor([[0, 5, 6, 7, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    token_map = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    batch = fine_batch([[0, 3, 2]], [torch.zeros(1, 4)], [[[0, 0, 0]]])
    batch["image_ids"] = torch.tensor([10])
    got = runner.evaluate_detection(StandInFiber(), [batch, batch], ground_truth, prompt, token_map, [1, 2, 3])
    assert got["AP"] == pytest.approx(0.5) and got["AP50"] == pytest.approx(0.5)
    assert got["num_images"] == 1
    with pytest.raises(ValueError, match="not in the ground truth"):
        batch["image_ids"] = torch.tensor([99])
        runner.evaluate_detection(StandInFiber(), [batch], ground_truth, prompt, token_map, [1, 2, 3])
