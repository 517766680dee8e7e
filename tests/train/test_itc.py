"""ITC against a brute-force per-row reference, with shared images, a queue, and 2 gloo ranks."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fiber_fast.train.objectives import EmbeddingQueue, itc_loss


def reference_itc(image, text, scale, ids, keys_image=None, keys_text=None, key_ids=None):
    """Row by row: -mean over the positives' log-probabilities (uniform target), i2t and t2i averaged."""
    keys_image = image if keys_image is None else keys_image
    keys_text = text if keys_text is None else keys_text
    key_ids = ids if key_ids is None else key_ids
    total = 0.0
    for queries, keys in ((image, keys_text), (text, keys_image)):
        for row in range(queries.shape[0]):
            valid = [k for k in range(keys.shape[0]) if key_ids[k] >= 0]
            logits = torch.stack([scale * queries[row] @ keys[k] for k in valid])
            log_prob = logits - torch.logsumexp(logits, 0)
            positives = [i for i, k in enumerate(valid) if key_ids[k] == ids[row]]
            total = total - sum(log_prob[p] for p in positives) / len(positives) / queries.shape[0]
    return total / 2


def features(batch, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(batch, dim, generator=g), dim=1),
            F.normalize(torch.randn(batch, dim, generator=g), dim=1))


def test_itc_matches_reference_unique_images():
    image, text = features(6)
    ids = torch.arange(6)
    scale = torch.tensor([14.0])
    assert torch.allclose(itc_loss(image, text, scale, ids), reference_itc(image, text, 14.0, ids), atol=1e-5)


def test_itc_shared_images_are_positives():
    image, text = features(6, seed=1)
    ids = torch.tensor([3, 3, 5, 7, 7, 7])
    got = itc_loss(image, text, torch.tensor([10.0]), ids)
    assert torch.allclose(got, reference_itc(image, text, 10.0, ids), atol=1e-5)
    # not the same as treating every row as its own class
    assert not torch.allclose(got, itc_loss(image, text, torch.tensor([10.0]), torch.arange(6)), atol=1e-3)


def test_itc_perfect_alignment_is_near_zero_and_gradient_flows():
    image, _ = features(4, seed=2)
    text = image.clone().requires_grad_(True)
    scale = torch.tensor([100.0], requires_grad=True)
    loss = itc_loss(image, text, scale, torch.arange(4))
    loss.backward()
    assert loss.item() < 0.05
    assert text.grad is not None and scale.grad is not None


def test_itc_with_queue_matches_reference():
    image, text = features(4, seed=3)
    queue = EmbeddingQueue(size=5, dim=8)
    old_image, old_text = features(3, seed=4)
    queue.push(old_image, old_text, torch.tensor([1, 10, 11]))  # image 1 is also in the batch: a positive
    ids = torch.tensor([0, 1, 2, 3])
    got = itc_loss(image, text, torch.tensor([5.0]), ids, queue=queue)
    keys_image = torch.cat([image, queue.image_feat])
    keys_text = torch.cat([text, queue.text_feat])
    key_ids = torch.cat([ids, queue.image_ids])
    assert queue.image_ids.tolist() == [1, 10, 11, -1, -1]
    want = reference_itc(image, text, 5.0, ids, keys_image, keys_text, key_ids)
    assert torch.allclose(got, want, atol=1e-5)


def test_queue_wraps_around_fifo():
    queue = EmbeddingQueue(size=3, dim=2)
    for start in (0, 2):
        feats = torch.full((2, 2), float(start))
        queue.push(feats, feats, torch.tensor([start, start + 1]))
    assert queue.image_ids.tolist() == [3, 1, 2] and int(queue.pointer) == 1
    assert queue.state_dict()["image_ids"].tolist() == [3, 1, 2]


def test_itc_rejects_bad_shapes():
    image, text = features(4)
    with pytest.raises(ValueError, match="text_feat"):
        itc_loss(image, text[:3], torch.tensor([1.0]), torch.arange(4))
    with pytest.raises(ValueError, match="image_ids"):
        itc_loss(image, text, torch.tensor([1.0]), torch.arange(4).int())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, port, image, text, ids, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = slice(rank * 3, rank * 3 + 3)
        local_image = image[rows].clone().requires_grad_(True)
        local_text = text[rows].clone().requires_grad_(True)
        loss = itc_loss(local_image, local_text, torch.tensor([7.0]), ids[rows])
        loss.backward()
        out[rank] = (loss.detach(), local_image.grad, local_text.grad)
    finally:
        dist.destroy_process_group()


def test_itc_two_ranks_gathers_with_gradient():
    """Two gloo ranks of 3 rows: mean of the local losses = the 6-row loss; each rank's feature gradient
    = world x the 6-row loss's gradient for its rows (DeepSpeed's gradient average divides by world)."""
    image, text = features(6, seed=5)
    ids = torch.tensor([0, 1, 2, 2, 4, 5])  # image 2 spans both ranks
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank_worker, args=(2, _free_port(), image, text, ids, out), nprocs=2, join=True)
    full_image, full_text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    full = itc_loss(full_image, full_text, torch.tensor([7.0]), ids)
    full.backward()
    losses = [out[r][0] for r in range(2)]
    assert math.isclose(sum(float(x) for x in losses) / 2, float(full.detach()), rel_tol=1e-5)
    for r in range(2):
        rows = slice(r * 3, r * 3 + 3)
        assert torch.allclose(out[r][1], 2 * full_image.grad[rows], atol=1e-6)
        assert torch.allclose(out[r][2], 2 * full_text.grad[rows], atol=1e-6)
