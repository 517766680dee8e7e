"""Fine-stage losses against GLIP's ATSSLossComputation written out per image and per anchor."""

import torch
from fiber_kernels import atss_assign, atss_targets
from fiber_kernels.atss.targets import decode_glip

from fiber_fast.train.objectives import grounding_losses, grounding_targets


def anchors_for(image=64, strides=(8, 16, 32)):
    """One square anchor of size 8*stride per location, GLIP layout (levels, then row-major)."""
    rows, sizes = [], []
    for stride in strides:
        n = image // stride
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        cx, cy = (xs.flatten() + 0.5) * stride, (ys.flatten() + 0.5) * stride
        half = 2.0 * stride
        rows.append(torch.stack([cx - half, cy - half, cx + half, cy + half], 1).float())
        sizes.append(n * n)
    return torch.cat(rows), sizes


def case():
    g = torch.Generator().manual_seed(0)
    anchors, sizes = anchors_for()
    boxes = torch.tensor([[[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0], [0, 0, 0, 0]],
                          [[10.0, 10.0, 50.0, 58.0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    box_mask = torch.tensor([[True, True, False], [True, False, False]])
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    positive_map = torch.zeros(2, 3, 6)
    positive_map[0, 0, 1:3] = 1
    positive_map[0, 1, 3] = 1
    positive_map[1, 0, 1] = 1
    num_anchors = anchors.shape[0]
    cls = torch.randn(2, num_anchors, 6, generator=g)
    reg = 0.3 * torch.randn(2, num_anchors, 4, generator=g)
    ctr = torch.randn(2, num_anchors, generator=g)
    return anchors, sizes, boxes, box_mask, positive_map, text_mask, cls, reg, ctr


def glip_giou(pred, target, anchor):
    """GLIP's GIoULoss.forward (maskrcnn_benchmark/layers/iou_loss.py), per box, unweighted."""
    p, t = decode_glip(pred, anchor), decode_glip(target, anchor)
    px1, py1 = p[:, 0], p[:, 1]
    px2, py2 = torch.max(px1, p[:, 2]), torch.max(py1, p[:, 3])
    tx1, ty1, tx2, ty2 = t.unbind(1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)
    ix1, iy1, ix2, iy2 = torch.max(px1, tx1), torch.max(py1, ty1), torch.min(px2, tx2), torch.min(py2, ty2)
    inter = torch.where((ix2 > ix1) & (iy2 > iy1), (ix2 - ix1) * (iy2 - iy1), torch.zeros_like(ix1))
    ex1, ey1, ex2, ey2 = torch.min(px1, tx1), torch.min(py1, ty1), torch.max(px2, tx2), torch.max(py2, ty2)
    enclosing = (ex2 - ex1) * (ey2 - ey1) + 1e-7
    union = pred_area + target_area - inter + 1e-7
    return 1 - (inter / union - (enclosing - union) / enclosing)


def reference_losses(anchors, sizes, boxes, box_mask, positive_map, text_mask, cls, reg, ctr):
    cls_sum = giou_sum = ctr_sum = center_total = 0.0
    num_pos = 0
    for b in range(boxes.shape[0]):
        real = boxes[b][box_mask[b]]
        matched, _ = atss_assign(anchors, sizes, real[None], backend="torch")
        reg_t, ctr_t = atss_targets(anchors, matched, real[None])
        matched, reg_t, ctr_t = matched[0], reg_t[0], ctr_t[0]
        for a in range(anchors.shape[0]):
            for t in range(cls.shape[2]):
                if not text_mask[b, t]:
                    continue
                y = positive_map[b, matched[a], t] if matched[a] >= 0 else torch.tensor(0.0)
                p = torch.sigmoid(cls[b, a, t])
                ce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
                p_t = p * y + (1 - p) * (1 - y)
                cls_sum = cls_sum + (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
        pos = matched >= 0
        num_pos += int(pos.sum())
        giou = glip_giou(reg[b][pos], reg_t[pos], anchors[pos])
        giou_sum = giou_sum + (giou * ctr_t[pos]).sum()
        center_total = center_total + ctr_t[pos].sum()
        q = torch.sigmoid(ctr[b][pos])
        ctr_sum = ctr_sum - (ctr_t[pos] * torch.log(q) + (1 - ctr_t[pos]) * torch.log(1 - q)).sum()
    return {"cls": cls_sum / num_pos, "giou": 2 * giou_sum / center_total, "centerness": ctr_sum / num_pos}


def test_grounding_losses_match_glip_reference():
    anchors, sizes, boxes, box_mask, positive_map, text_mask, cls, reg, ctr = case()
    targets = grounding_targets(anchors, sizes, boxes, box_mask, positive_map)
    assert int((targets.matched >= 0).sum()) > 4
    got = grounding_losses(cls, reg, ctr, anchors, targets, text_mask)
    want = reference_losses(anchors, sizes, boxes, box_mask, positive_map, text_mask, cls, reg, ctr)
    for key in ("cls", "giou", "centerness"):
        assert torch.allclose(got[key], want[key].float(), rtol=1e-4, atol=1e-6), (key, got[key], want[key])


def test_grounding_padding_text_positions_do_not_matter_and_gradients_flow():
    anchors, sizes, boxes, box_mask, positive_map, text_mask, cls, reg, ctr = case()
    targets = grounding_targets(anchors, sizes, boxes, box_mask, positive_map)
    cls = cls.clone().requires_grad_(True)
    reg = reg.clone().requires_grad_(True)
    got = grounding_losses(cls, reg, ctr, anchors, targets, text_mask)
    shifted = cls.detach().clone()
    shifted[(text_mask == 0)[:, None, :].expand_as(shifted)] = 50.0
    again = grounding_losses(shifted, reg, ctr, anchors, targets, text_mask)
    assert torch.equal(got["cls"], again["cls"])
    sum(got.values()).backward()
    assert cls.grad.abs().sum() > 0 and reg.grad.abs().sum() > 0
    assert torch.all(cls.grad.transpose(1, 2)[text_mask == 0] == 0)


def test_grounding_targets_tokens_follow_matched_box():
    anchors, sizes, boxes, box_mask, positive_map, *_ = case()
    targets = grounding_targets(anchors, sizes, boxes, box_mask, positive_map)
    for b in range(2):
        for a in range(anchors.shape[0]):
            m = int(targets.matched[b, a])
            want = positive_map[b, m] if m >= 0 else torch.zeros(6)
            assert torch.equal(targets.tokens[b, a], want)


def test_grounding_no_boxes_gives_zero_box_losses():
    anchors, sizes, boxes, _, positive_map, text_mask, cls, reg, ctr = case()
    targets = grounding_targets(anchors, sizes, boxes, torch.zeros(2, 3, dtype=torch.bool), positive_map)
    got = grounding_losses(cls, reg, ctr, anchors, targets, text_mask)
    assert got["giou"].item() == 0.0 and got["centerness"].item() == 0.0 and got["cls"].item() > 0
