"""``save_checkpoint`` of a model whose parameters are views into one flat buffer (as DeepSpeed ZeRO-1/2 leave
them): safetensors refuses shared storage, so the checkpoint must copy each tensor; tied weights stay tied."""

from __future__ import annotations

from pathlib import Path

import torch

from fiber_fast.models import FiberConfig, build_fiber, load_checkpoint, save_checkpoint


def test_flat_buffer_parameters_save_and_load(tmp_path: Path) -> None:
    cfg = FiberConfig.preset("tiny", stage="fine")
    model = build_fiber(cfg)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    offset = 0
    for parameter in model.parameters():  # each parameter becomes a view of `flat`, as ZeRO's flat groups
        parameter.data = flat[offset:offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    loaded = build_fiber(cfg)
    load_checkpoint(loaded, path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.mlm_head.decoder.weight is loaded.text.embeddings.word_embeddings.weight
