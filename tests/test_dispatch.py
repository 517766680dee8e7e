"""Backend choice: auto order per device, explicit requests, the environment override, reasons."""

import pytest
import torch
from fiber_kernels import dispatch
from fiber_kernels.dispatch import BackendNotSupportedError, DeviceInfo

CPU = DeviceInfo("cpu")
SM70 = DeviceInfo("cuda", (7, 0))
SM80 = DeviceInfo("cuda", (8, 0))
SM90 = DeviceInfo("cuda", (9, 0))


@pytest.fixture
def toy_op(monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway op with triton, cuda and torch backends; triton refuses head_dim 96."""
    monkeypatch.setattr(dispatch, "_REGISTRY", dispatch._Registry())

    def head_dim_reasons(device: DeviceInfo, head_dim: int) -> list[str]:
        return [] if head_dim in (32, 64, 128) else [f"head_dim {head_dim} not in (32, 64, 128)"]

    dispatch.register_backend("toy", "triton", lambda: "triton", head_dim_reasons)
    dispatch.register_backend("toy", "cuda", lambda: "cuda")
    dispatch.register_backend("toy", "torch", lambda: "torch")
    return "toy"


def test_auto_order_follows_the_device() -> None:
    assert dispatch.auto_order(SM90) == ("triton", "cuda", "torch")
    assert dispatch.auto_order(SM80) == ("triton", "cuda", "torch")
    assert dispatch.auto_order(SM70) == ("cuda", "torch")
    assert dispatch.auto_order(DeviceInfo("cuda", (7, 5))) == ("cuda", "torch")
    assert dispatch.auto_order(CPU) == ("cpp", "torch")


def test_auto_on_gpu_takes_triton_when_it_can(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch._extension, "triton_available", lambda: True)
    assert dispatch.select_backend(toy_op, SM80, inputs={"head_dim": 64}).name == "triton"


def test_auto_skips_a_backend_with_reasons(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch._extension, "triton_available", lambda: True)
    # head_dim 96: triton refuses; _C is not built with CUDA here, so cuda refuses too; torch serves.
    monkeypatch.setattr(dispatch._extension, "has_kernel", lambda op, key: False)
    assert dispatch.select_backend(toy_op, SM80, inputs={"head_dim": 96}).name == "torch"


def test_auto_on_cpu_without_cpp_kernel_takes_torch(toy_op: str) -> None:
    assert dispatch.select_backend(toy_op, CPU, inputs={"head_dim": 64}).name == "torch"


def test_explicit_request_lists_every_reason(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendNotSupportedError) as info:
        dispatch.select_backend(toy_op, CPU, "triton", inputs={"head_dim": 96})
    message = str(info.value)
    assert "TRITON_INTERPRET=1 is not set" in message
    assert "head_dim 96 not in (32, 64, 128)" in message
    assert "requested 'triton'" in message


def test_triton_serves_cpu_tensors_only_under_the_interpreter(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.select_backend(toy_op, CPU, "triton", inputs={"head_dim": 32}).name == "triton"
    # auto never picks the interpreter
    assert dispatch.select_backend(toy_op, CPU, "auto", inputs={"head_dim": 32}).name == "torch"


def test_cuda_backend_needs_the_extension(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch._extension, "has_kernel", lambda op, key: False)
    with pytest.raises(BackendNotSupportedError, match="cuda: .*no cuda kernel for toy|cuda: .*not built"):
        dispatch.select_backend(toy_op, SM70, "cuda")
    with pytest.raises(BackendNotSupportedError, match="tensors are on cpu, this backend needs cuda tensors"):
        dispatch.select_backend(toy_op, CPU, "cuda")


def test_cuda_backend_chosen_on_volta_when_built(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch._extension, "is_built", lambda: True)
    monkeypatch.setattr(dispatch._extension, "has_kernel", lambda op, key: key == "CUDA")
    assert dispatch.select_backend(toy_op, SM70).name == "cuda"


def test_missing_backend_is_a_reason(toy_op: str) -> None:
    with pytest.raises(BackendNotSupportedError, match="toy has no cpp backend"):
        dispatch.select_backend(toy_op, CPU, "cpp")


def test_environment_variable_replaces_auto(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    monkeypatch.setattr(dispatch._extension, "triton_available", lambda: True)
    assert dispatch.select_backend(toy_op, SM80, inputs={"head_dim": 64}).name == "torch"
    # a backend named in the call wins over the environment
    assert dispatch.select_backend(toy_op, SM80, "triton", inputs={"head_dim": 64}).name == "triton"


def test_bad_environment_value(toy_op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="FIBER_KERNELS_BACKEND must be one of"):
        dispatch.select_backend(toy_op, CPU)


def test_bad_backend_argument(toy_op: str) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.select_backend(toy_op, CPU, "cudnn")
    with pytest.raises(TypeError, match="backend must be a str"):
        dispatch.select_backend(toy_op, CPU, None)  # type: ignore[arg-type]


def test_unknown_op_and_bad_registration(toy_op: str) -> None:
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        dispatch.select_backend("nope", CPU)
    with pytest.raises(ValueError, match="backend name must be one of"):
        dispatch.register_backend("toy", "metal", lambda: None)


def test_device_info_of_tensors() -> None:
    assert DeviceInfo.of(torch.zeros(1)) == CPU
    assert str(SM80) == "cuda sm80"
    fake_mode = torch._subclasses.fake_tensor.FakeTensorMode()
    with fake_mode:
        fake = torch.empty(2, device="cuda")
    expected = torch.cuda.get_device_capability() if torch.cuda.is_available() else (8, 0)
    assert DeviceInfo.of(fake) == DeviceInfo("cuda", expected)


def test_register_launchers_registers_every_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_REGISTRY", dispatch._Registry())
    limits = dispatch.BackendLimits(head_dims=(32,))

    def reasons(device: DeviceInfo, head_dim: int) -> list[str]:
        return limits.head_dim_reasons(head_dim, "head dim")

    table = {"triton": dispatch.Launchers(abs, abs, limits, reasons),
             "cuda": dispatch.Launchers(abs, abs, dispatch.BackendLimits())}
    dispatch.register_launchers("toy", table, lambda name: lambda: f"op with launcher {name}")
    backends = dispatch.registered_ops()["toy"]
    assert list(backends) == ["triton", "cuda"]
    assert backends["triton"].impl() == "op with launcher triton" and backends["cuda"].impl() == "op with launcher cuda"
    assert backends["triton"].limits is limits and backends["triton"].reasons is reasons
    assert backends["cuda"].limits is table["cuda"].limits and backends["cuda"].reasons is None
    assert backends["triton"].reasons(SM80, head_dim=64) == ["head dim must be one of (32,), got 64"]


def test_every_launcher_table_entry_is_a_registered_backend() -> None:
    """The ops' launcher tables are what dispatch knows: each entry registered under its name with its limits and
    reasons, in table order, then the ``torch`` backend (outside the custom op)."""
    from fiber_kernels.cross_attention.function import ATTENTION_LAUNCHERS, LINEAR_LAUNCHERS
    from fiber_kernels.window_attention.function import LAUNCHERS

    registered = dispatch.registered_ops()
    for op, table in (("cross_attention", ATTENTION_LAUNCHERS), ("gated_residual_linear", LINEAR_LAUNCHERS),
                      ("window_attention", LAUNCHERS)):
        assert list(registered[op]) == [*table, "torch"], op
        for name, launchers in table.items():
            assert registered[op][name].limits is launchers.limits, (op, name)
            assert registered[op][name].reasons is launchers.reasons, (op, name)
