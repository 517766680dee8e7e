"""FIBER's gated cross-attention, eager (FIBER's code path) vs fused (``fiber_kernels.cross_attention``).

Two kernels:
- ``fiber_xattn_core``: the attention core, q ``(B, H, Nq, D)`` against k/v ``(Bk, H, Nk, D)`` with
  ``B = windows``, ``Bk = images`` (image->text) or ``B = Bk`` (text->image). Providers: ``eager``
  (FIBER: keys repeated per window, ``(B, H, Nq, Nk)`` probabilities saved), ``fused`` (Triton
  custom op: keys shared, saves q, k, v, out and the row log-sum-exp), ``torch`` (our CPU path:
  grouped SDPA, no per-window copies), ``sdpa`` (SDPA with FIBER's per-window copies), flash-attn and
  xformers where a GPU exists.
- ``fiber_fusion_branch``: the whole branch module, ``x + alpha * proj(attn(q(LN(x)), kv(other)))``
  (image->text, FIBER ``WindowAttention``) or ``h + alpha * dense(attn(query(h), key/value(image)))``
  (text->image, FIBER ``RobertaLayer``). ``eager``: FIBER's code with the module's weights;
  ``fused``: ``ImageToTextFusion`` / ``TextToImageFusion`` on the Triton kernels; ``torch``: the same
  modules on the torch backend (what the CPU runs).

Shapes (docs/shapes.md): coarse 384² batch 8 (stage 3: 32 windows x 144 tokens, 16 heads x 32,
text 40; text->image 40 x 576, 12 x 64), fine 800x1333 batch 1 (stage 3: 35 windows x 144, text 256;
text->image 256 x 4200, 12 x 64), and a small CPU set. Memory on fake CUDA bf16 tensors (fake tensors
run a custom op's fake impl, so the fused rows' note gives the bytes its backward op allocates inside
itself and the range they put the true peak in), projections from counted FLOPs/bytes (labelled
projected), CPU time of the CPU path vs eager in fp32 (the fine shapes record a skip: too slow on 2 cores).
"""

from __future__ import annotations

import torch
from fiber_kernels.cross_attention import cross_attention
from fiber_kernels.cross_attention.triton_attention import work_buffers
from fiber_kernels.modules.fusion import ImageToTextFusion, TextToImageFusion
from fiber_kernels.work_buffers import total_bytes

from bench.attention_cores import (
    attention_flops,
    cross_inputs,
    eager_cross_attention,
    flash_attn_reason,
    flash_cross_attention,
    padded_keys,
    sdpa_cross_attention,
    xformers_cross_attention,
    xformers_reason,
)
from bench.harness import Case, KernelBench, Provider, Shape, benchmark_tests, triton_reason


def cpu_path_reason(device: torch.device, purpose: str) -> str | None:
    """The ``torch`` backend is what runs on the CPU; on a GPU ``auto`` picks the fused kernel, and on
    fake CUDA tensors SDPA falls back to its math backend, which no GPU would run."""
    if device.type == "cuda":
        return "the torch backend is the CPU path (a GPU runs the fused kernel); on fake CUDA SDPA would " \
               "fall back to its math backend"
    return None


CORE_PROVIDERS = (
    Provider("eager"),
    Provider("fused", triton_reason),
    Provider("torch", cpu_path_reason),
    Provider("sdpa"),
    Provider("flash_attn", flash_attn_reason),
    Provider("xformers", xformers_reason),
)
BRANCH_PROVIDERS = (Provider("eager"), Provider("fused", triton_reason), Provider("torch", cpu_path_reason))


def _shape(label: str, direction: str, B: int, Bk: int, H: int, Nq: int, Nk: int, D: int, pad: int,
           **flags: bool) -> Shape:
    return Shape(label, {"i2t": int(direction == "i2t"), "B": B, "Bk": Bk, "H": H, "Nq": Nq, "Nk": Nk, "D": D,
                         "pad": pad}, **flags)


SHAPES = (
    _shape("quick_i2t", "i2t", 8, 2, 4, 144, 40, 32, 10, quick=True),
    _shape("quick_t2i", "t2i", 2, 2, 12, 40, 144, 64, 0, quick=True),
    _shape("coarse_i2t_s3", "i2t", 32, 8, 16, 144, 40, 32, 10),
    _shape("coarse_t2i_s3", "t2i", 8, 8, 12, 40, 576, 64, 0),
    _shape("fine_i2t_s3", "i2t", 35, 1, 16, 144, 256, 32, 64, cpu_time=False),
    _shape("fine_t2i_s3", "t2i", 1, 1, 12, 256, 4200, 64, 0, cpu_time=False),
)


def _dims(shape: Shape) -> tuple[int, ...]:
    return tuple(shape.dims[k] for k in ("B", "Bk", "H", "Nq", "Nk", "D", "pad"))


def attention_temporaries(shape: Shape, device: torch.device, dtype: torch.dtype) -> tuple[str, int]:
    """What the fused attention's backward custom op allocates and frees inside itself, which fake tensors
    cannot see (they run the op's fake impl): a description and the bytes live at once, from the launcher's
    config and split plan for this shape (``triton_attention.work_buffers``)."""
    B, Bk, H, Nq, Nk, D, _ = _dims(shape)
    buffers = {buffer.name: buffer for buffer in work_buffers((B, H, Nq, D), (Bk, H, Nk, D), dtype, device)}
    parts = [f"fp32 delta {buffers['delta'].nbytes} B"]
    if "dk_part" in buffers:
        partials = buffers["dk_part"].nbytes + buffers["dv_part"].nbytes
        parts += [f"fp32 dk/dv partials ({buffers['dk_part'].shape[0]} splits) {partials} B",
                  f"one fp32 partial sum {buffers['partial_sum'].nbytes} B"]
    return ", ".join(parts), total_bytes(buffers.values())


def build_core(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """Trainable q, k, v and the caption padding mask; image->text scales q first (Swin), text->image
    divides the scores (RoBERTa), as FIBER's two eager paths do."""
    B, _, H, Nq, Nk, D, _ = _dims(shape)
    q, k, v, mask = cross_inputs(provider, shape.dims, device, dtype)
    image_side = bool(shape.dims["i2t"])
    functions = {
        "eager": lambda q, k, v, m: eager_cross_attention(q, k, v, m, image_side),
        "fused": lambda q, k, v, m: cross_attention(q, k, v, m, backend="triton"),
        "torch": lambda q, k, v, m: cross_attention(q, k, v, m, backend="torch"),
        "sdpa": lambda q, k, v, m: sdpa_cross_attention(q, k, v, m, image_side),
        "flash_attn": lambda q, k, v, m: flash_cross_attention(q, k, v, m, image_side),
        "xformers": lambda q, k, v, m: xformers_cross_attention(q, k, v, m, image_side),
    }
    note = ""
    if provider == "fused":
        what, peak = attention_temporaries(shape, device, dtype)
        note = (f"peak_bytes excludes the backward op's internal temporaries ({what}): the true peak lies in "
                f"[peak_bytes, peak_bytes + {peak} B]")
    return Case(functions[provider], (q, k, v, mask), attention_flops(B, H, Nq, Nk, D), note=note)


def fiber_image_to_text(module: ImageToTextFusion, x: torch.Tensor, other: torch.Tensor,
                        key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """FIBER's eager image->text branch (``WindowAttention.forward``, ``y is not None``) on ``module``'s weights."""
    windows, tokens, channels = x.shape
    text_batch, text_tokens, _ = other.shape
    heads = module.num_heads
    kv = module.qkv_text_i2t(other).reshape(text_batch, text_tokens, 2, heads, channels // heads)
    kv = kv.permute(2, 0, 3, 1, 4)
    q = module.qkv_i2t(module.norm_i2t_i(x)).reshape(windows, tokens, heads, channels // heads).permute(0, 2, 1, 3)
    attn = eager_cross_attention(q, kv[0], kv[1], key_padding_mask, True)
    y = module.proj_i2t(attn.transpose(1, 2).reshape(windows, tokens, channels))
    return x + module.alpha_i2t * y


def fiber_text_to_image(module: TextToImageFusion, h: torch.Tensor, other: torch.Tensor,
                        key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """FIBER's eager text->image branch (``RobertaLayer.forward`` with ``encoder_hidden_states``)."""
    projections, heads = module.crossattention_t2i.self, module.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:-1], heads, -1).permute(0, 2, 1, 3)

    context = eager_cross_attention(split(projections.query(h)), split(projections.key(other)),
                                    split(projections.value(other)), key_padding_mask, False)
    context = context.permute(0, 2, 1, 3).flatten(2)
    return module.alpha_t2i * module.crossattention_t2i.output.dense(context) + h


def _module(image_side: bool, channels: int, heads: int, other_channels: int, backend: str,
            device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The branch module built directly on ``device`` in ``dtype`` (works under FakeTensorMode too)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if image_side:
                module = ImageToTextFusion(channels, heads, dim_text=other_channels, backend=backend)
            else:
                module = TextToImageFusion(channels, heads, dim_image=other_channels, backend=backend)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():  # FIBER initialises alpha to 0; any value exercises the same work
        for name, param in module.named_parameters():
            if name.startswith("alpha"):
                param.fill_(0.5)
    return module


def build_branch(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """x (window tokens ``(B, Nq, H·D)`` or text ``(B, Nq, H·D)``) and the other stream (text 768-d or
    stage-3 image 512-d tokens) trainable, module weights trainable, caption padding on the text keys."""
    B, Bk, H, Nq, Nk, D, pad = _dims(shape)
    image_side = bool(shape.dims["i2t"])
    channels = H * D
    other_channels = 768 if image_side else 512
    backend = {"eager": "torch", "fused": "triton", "torch": "torch"}[provider]
    module = _module(image_side, channels, H, other_channels, backend, device, dtype)
    x = torch.randn(B, Nq, channels, device=device, dtype=dtype, requires_grad=True)
    other = torch.randn(Bk, Nk, other_channels, device=device, dtype=dtype, requires_grad=True)
    mask = padded_keys(Bk, Nk, pad, device)
    if provider == "eager":
        fiber = fiber_image_to_text if image_side else fiber_text_to_image
        fn = lambda x, other, mask: fiber(module, x, other, mask)
    else:
        fn = lambda x, other, mask: module(x, other, mask)
    # Model FLOPs: the attention core plus the projections (q, kv, out): 2·rows·in·out each, bwd 2x.
    linear = 2.0 * (B * Nq * channels * channels * 2 + Bk * Nk * other_channels * 2 * channels)
    core = attention_flops(B, H, Nq, Nk, D)
    flops = {mode: core[mode] + linear * (1, 2, 3)[index] for index, mode in enumerate(("fwd", "bwd", "full"))}
    notes = [f"module weights {sum(p.numel() for p in module.parameters())}"]
    if provider == "fused":
        what, peak = attention_temporaries(shape, device, dtype)
        linear = 2 * channels * channels * 4 + channels * 4  # fp32 dyᵀa and one fp32 product (C, C), column sums
        notes.append(f"peak_bytes excludes the backward ops' internal temporaries: attention {what}; gated linear "
                     f"{linear} B (fp32 dyᵀa, one fp32 product, column sums) and a few scalars; the ops run one at a "
                     f"time: the true peak lies in [peak_bytes, peak_bytes + {max(peak, linear)} B + scalars]")
    return Case(fn, (x, other, mask), flops, note="; ".join(notes))


CORE = KernelBench("fiber_xattn_core", CORE_PROVIDERS, SHAPES, build_core)
BRANCH = KernelBench("fiber_fusion_branch", BRANCH_PROVIDERS, SHAPES, build_branch)


test_core_speed, test_core_memory, test_core_projection = benchmark_tests(CORE)
test_branch_speed, test_branch_memory, test_branch_projection = benchmark_tests(BRANCH)
