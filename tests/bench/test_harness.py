"""Tests of the benchmark harness code (bench/), not benchmarks: schema, CSV, quantiles, plots, CLI."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness, plot, report  # noqa: E402
from bench.schema import (  # noqa: E402
    COLUMNS,
    Row,
    RunInfo,
    append_rows,
    benchmark_data,
    quantile,
    read_rows,
    summarize,
    write_rows,
)
from fiber_fast import bench_cli, cli  # noqa: E402

RUN = RunInfo("20260101T000000Z", "2026-01-01T00:00:00+00:00", "Test CPU (2 threads)", "2.x", "3.x", "abc123")
DIMS = {"B": 2, "H": 4, "N": 49}


def _rows() -> list[Row]:
    return [
        Row("attn", "eager", "fwd", "s1", DIMS, "time", 1e-3, 0.9e-3, 1.2e-3, 7, "fp32"),
        Row("attn", "sdpa", "fwd", "s1", DIMS, "time", 2e-3, 1.8e-3, 2.5e-3, 5, "fp32"),
        Row("attn", "eager", "full", "s1", DIMS, "peak_bytes", 4096.0, dtype="bf16", device="fake CUDA"),
        Row("attn", "eager", "fwd", "s1", DIMS, "projected_time", 5e-6, dtype="bf16", device="A100"),
        Row("attn", "flash_attn", "fwd", "s1", DIMS, "skipped", note="flash_attn not installed"),
    ]


class FakeStats:
    """What pytest-benchmark's ``Stats`` exposes: ``data``, one time per round (seconds)."""

    def __init__(self, data: list[float]) -> None:
        self.data = data


class FakeMetadata:
    def __init__(self, data: list[float]) -> None:
        self.stats = FakeStats(data)


class FakeFixture:
    def __init__(self, data: list[float]) -> None:
        self.stats = FakeMetadata(data)


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    assert write_rows(path, _rows(), RUN) == 5
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    back = read_rows(path)
    assert [r["metric"] for r in back] == ["time", "time", "peak_bytes", "projected_time", "skipped"]
    assert [r["kind"] for r in back] == ["measured", "measured", "measured", "projected", "skipped"]
    first = back[0]
    assert first["dims"] == DIMS and first["median"] == 1e-3 and first["p20"] == 0.9e-3 and first["rounds"] == 7
    assert first["device"] == RUN.device and first["commit"] == "abc123" and first["unit"] == "s"
    assert back[3]["device"] == "A100" and back[4]["median"] is None and back[4]["note"]


def test_append_keeps_earlier_rows_and_rejects_other_schema(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    append_rows(path, _rows()[:1], RUN)
    append_rows(path, _rows()[1:2], RUN)
    assert len(read_rows(path)) == 2
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another schema"):
        append_rows(other, _rows(), RUN)
    with pytest.raises(ValueError, match="not the fiber-fast bench schema"):
        read_rows(other)


def test_quantiles_from_fake_stats() -> None:
    data = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for obj in (FakeFixture(data), FakeMetadata(data), FakeStats(data), data):
        assert benchmark_data(obj) == data
    median, p20, p80, n = summarize(data)
    assert n == 6
    ref = torch.tensor(sorted(data), dtype=torch.float64)
    for got, q in ((median, 0.5), (p20, 0.2), (p80, 0.8)):
        assert got == pytest.approx(torch.quantile(ref, q).item())
    assert quantile([2.0], 0.2) == 2.0
    with pytest.raises(ValueError, match="empty"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match="no timing data"):
        benchmark_data(object())


def test_time_rows_tflops_from_flops() -> None:
    shape = harness.Shape("s", DIMS)
    rows = harness.time_rows(FakeFixture([1e-3, 2e-3, 3e-3]), kernel="k", provider="p", mode="fwd", shape=shape,
                             dtype="fp32", flops=4e9)
    time_row, tflops_row = rows
    assert (time_row.metric, time_row.median, time_row.rounds) == ("time", 2e-3, 3)
    assert tflops_row.metric == "tflops" and tflops_row.median == pytest.approx(4e9 / 2e-3 / 1e12)
    assert tflops_row.p20 <= tflops_row.median <= tflops_row.p80
    assert all(r.kind == "measured" for r in rows)


def test_measured_and_projected_never_share_a_row(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never share a row"):
        Row("k", "p", "fwd", "s", DIMS, "projected_time", 1.0, kind="measured")
    with pytest.raises(ValueError, match="never share a row"):
        Row("k", "p", "fwd", "s", DIMS, "time", 1.0, kind="projected")
    with pytest.raises(ValueError, match="metric must be one of"):
        Row("k", "p", "fwd", "s", DIMS, "speed", 1.0)
    with pytest.raises(ValueError, match="reason"):
        Row("k", "p", "fwd", "s", DIMS, "skipped")
    with pytest.raises(ValueError, match="finite"):
        Row("k", "p", "fwd", "s", DIMS, "time", float("nan"))
    path = tmp_path / "r.csv"
    write_rows(path, _rows()[3:4], RUN)
    path.write_text(path.read_text().replace(",projected,", ",measured,"))
    with pytest.raises(ValueError, match="not allowed"):
        read_rows(path)


def test_report_keeps_projections_in_their_own_section(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_rows(path, _rows(), RUN)
    text = report.format_report(read_rows(path))
    measured, projected = text.split("PROJECTED", 1)
    assert "A100" not in measured and "0.005" in projected  # 5e-6 s = 0.005 ms
    assert "MEASURED speed" in measured and "1.000" in measured and "0.50x" in measured
    assert "SKIPPED" in projected and "flash_attn not installed" in projected


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.csv"
    write_rows(path, _rows(), RUN)
    assert plot.main([str(path), "--out", str(tmp_path / "plots")]) == 0
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    names = [p.name for p in pngs]
    assert len(pngs) == 3 and sum(n.startswith("projected_") for n in names) == 1
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_plot_axis_is_log_only_for_positive_values() -> None:
    assert plot.y_scale([1e-6, 3.0]) == "log"
    assert plot.y_scale([0.0, 3.0]) == "linear" and plot.y_scale([0.0]) == "linear" and plot.y_scale([]) == "linear"


def test_mode_callables_compute_gradients() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    case = harness.Case(lambda t: (t * 2).sum(-1), (x,))
    assert harness.mode_callable(case, "fwd")().shape == (3,)
    for mode in ("bwd", "full"):
        harness.mode_callable(case, mode)()
        assert x.grad is not None and x.grad.shape == x.shape
        x.grad = None
    with pytest.raises(ValueError, match="mode"):
        harness.mode_callable(case, "sideways")


def test_skip_is_recorded_with_its_reason() -> None:
    recorder = harness.Recorder()
    with pytest.raises(pytest.skip.Exception, match="no GPU"):
        recorder.skip("k", "flash_attn", "fwd", harness.Shape("s", DIMS), "no GPU")
    assert recorder.rows[0].kind == "skipped" and recorder.rows[0].note == "no GPU"
    with pytest.raises(RuntimeError), recorder.failure("k", "eager", "full", harness.Shape("s", DIMS)):
        raise RuntimeError("boom")
    assert recorder.rows[1].note == "FAILED: RuntimeError: boom"


def test_quick_marks_follow_the_shape(pytestconfig: pytest.Config) -> None:
    pytestconfig.addinivalue_line("markers", "quick: registered by bench/conftest.py in benchmark runs")
    shapes = (harness.Shape("small", DIMS, quick=True), harness.Shape("big", DIMS))
    bench = harness.KernelBench("k", (harness.Provider("eager"),), shapes, lambda *a: None)
    speed = bench.speed_params()
    assert len(speed) == 6
    quick_ids = {p.id for p in speed if any(m.name == "quick" for m in p.marks)}
    assert quick_ids == {"eager-small-fwd", "eager-small-bwd", "eager-small-full"}
    assert {p.id for p in bench.memory_params()} == {"eager-small-cpu", "eager-small-cuda", "eager-big-cuda"}


def test_cli_help_lists_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([])


def test_cli_bench_without_checkout_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(bench_cli.BENCH_DIR_ENV, str(tmp_path / "nowhere"))
    assert cli.main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_cli_pytest_command() -> None:
    cmd = bench_cli.pytest_command(ROOT / "bench", Path("/tmp/out"), quick=True, keyword="sdpa", max_time=0.1)
    assert cmd[1:4] == ["-m", "pytest", str(ROOT / "bench")]
    assert "--quick" in cmd and cmd[cmd.index("-k") + 1] == "sdpa" and "--bench-out=/tmp/out" in cmd
    assert bench_cli.find_bench_dir() == ROOT / "bench"
    assert "--bench-threads=1" in bench_cli.pytest_command(ROOT / "bench", Path("/o"), False, None, 0.1, threads=1)


def _tiny_bench() -> harness.KernelBench:
    def build(provider: str, shape: harness.Shape, device: torch.device, dtype: torch.dtype) -> harness.Case:
        a = torch.randn(shape.dims["M"], shape.dims["K"], device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(shape.dims["K"], shape.dims["N"], device=device, dtype=dtype, requires_grad=True)
        if provider == "picky":
            raise harness.UnsupportedCaseError("picky serves no shape")
        # FLOPs: fwd = 2·M·K·N; bwd = 2 x fwd (two matmuls)
        fwd = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        return harness.Case(lambda a, b: (a @ b).relu(), (a, b), {"fwd": fwd, "bwd": 2 * fwd, "full": 3 * fwd})

    shapes = (harness.Shape("tiny", {"M": 8, "K": 16, "N": 4}, quick=True),)
    providers = (harness.Provider("eager"), harness.Provider("picky"))
    return harness.KernelBench("matmul_relu", providers, shapes, build)


def test_memory_and_projection_runners() -> None:
    pytest.importorskip("fiber_kernels.testing.roofline")
    bench, recorder = _tiny_bench(), harness.Recorder()
    shape = bench.shapes[0]
    for device in ("cpu", "cuda"):
        saved, peak = harness.run_memory(recorder, bench, "eager", shape, device)
        assert saved.metric == "saved_bytes" and saved.median > 0 and peak.median >= saved.median
    assert recorder.rows[-1].device.startswith("fake CUDA") and recorder.rows[-1].dtype == "bf16"
    rows = harness.run_projection(recorder, bench, "eager", shape)
    times = [r for r in rows if r.metric == "projected_time"]
    assert {r.device for r in times} == {"V100", "A100", "H100"} and {r.mode for r in times} == {"fwd", "full"}
    assert all(r.kind == "projected" and r.median > 0 for r in rows)
    with pytest.raises(pytest.skip.Exception, match="picky serves no shape"):
        harness.run_memory(recorder, bench, "picky", shape, "cpu")
    assert recorder.rows[-1].kind == "skipped"


def test_standard_provider_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "not speed" in harness.triton_reason(cpu, "time")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in harness.triton_reason(cpu, "memory")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert harness.triton_reason(cpu, "memory") is None
    assert "CPU" in harness.cuda_ext_reason("window_attention")(cpu, "memory")
    if not torch.cuda.is_available():
        assert harness.triton_reason(cuda, "time") is not None
        assert harness.cuda_ext_reason("window_attention")(cuda, "time") is not None
    assert "not installed" in harness.module_reason("no_such_module_xyz", "why")
    assert harness.module_reason("torch", "why") is None
    absent = harness.gpu_package_reason("no_such_module_xyz", "pip install it on a GPU host", "needs a real GPU")
    assert absent(cuda, "time") == "no_such_module_xyz not installed: pip install it on a GPU host"
    present = harness.gpu_package_reason("torch", "unused", "needs a real GPU")
    assert present(cpu, "memory") == "needs a real GPU"
    assert present(cuda, "time") == (None if torch.cuda.is_available() else "needs a real GPU")


def test_attention_cores_match_each_other_and_the_references() -> None:
    from fiber_kernels.cross_attention.reference import cross_attention_reference
    from fiber_kernels.window_attention.reference import (
        merge_windows,
        relative_position_index,
        shift_attention_mask,
        split_heads,
        window_attention_reference,
        windows_of_qkv,
    )

    from bench.attention_cores import (
        eager_cross_attention,
        eager_window_attention,
        sdpa_cross_attention,
        sdpa_window_attention,
    )

    f64 = torch.float64
    q = torch.randn(8, 2, 10, 16, dtype=f64)
    k, v = torch.randn(2, 2, 7, 16, dtype=f64), torch.randn(2, 2, 7, 16, dtype=f64)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[:, 5:] = True
    for mask in (None, pad):
        for scale_query in (True, False):
            eager = eager_cross_attention(q, k, v, mask, scale_query)
            torch.testing.assert_close(sdpa_cross_attention(q, k, v, mask, scale_query), eager)
            torch.testing.assert_close(cross_attention_reference(q, k, v, mask), eager)
    # The window cores on the windows of two 8x8 maps (window 4, 3 heads of 8), merged back, against the
    # library's step-by-step reference of the whole op, without and with a shift.
    qkv, table = torch.randn(2, 8, 8, 72, dtype=f64), torch.randn(49, 3, dtype=f64)
    index = relative_position_index(4, 4)
    for shift in ((0, 0), (2, 2)):
        windows, _, _ = windows_of_qkv(qkv, None, (4, 4), shift, False)
        qw, kw, vw = split_heads(windows, 3)
        mask = shift_attention_mask(8, 8, (4, 4), shift, dtype=f64) if any(shift) else None
        eager = eager_window_attention(qw, kw, vw, table, index, mask)
        torch.testing.assert_close(sdpa_window_attention(qw, kw, vw, table, index, mask), eager)
        merged = merge_windows(eager.transpose(1, 2).reshape(8, 16, 24), 2, 8, 8, 8, 8, (4, 4), shift, False)
        torch.testing.assert_close(merged, window_attention_reference(qkv, table, 3, (4, 4), shift, 8 ** -0.5))


def test_shared_attention_bench_pieces() -> None:
    from bench.attention_cores import attention_flops, cross_inputs, padded_keys

    fwd = 4.0 * 2 * 3 * 5 * 7 * 8
    assert attention_flops(2, 3, 5, 7, 8) == {"fwd": fwd, "bwd": 2 * fwd, "full": 3 * fwd}
    cpu = torch.device("cpu")
    assert padded_keys(2, 5, 0, cpu) is None
    assert padded_keys(2, 5, 2, cpu).tolist() == [[False, False, False, True, True]] * 2
    dims = {"B": 4, "Bk": 2, "H": 3, "Nq": 6, "Nk": 5, "D": 8, "pad": 2}
    q, k, v, mask = cross_inputs("eager", dims, cpu, torch.float32)
    assert q.shape == (4, 3, 6, 8) and k.shape == v.shape == (2, 3, 5, 8)
    assert all(t.requires_grad for t in (q, k, v)) and torch.equal(mask, padded_keys(2, 5, 2, cpu))
    with pytest.raises(harness.UnsupportedCaseError, match="flash_attn: key padding needs flash_attn_varlen_func"):
        cross_inputs("flash_attn", dims, cpu, torch.float32)
    assert cross_inputs("flash_attn", {**dims, "pad": 0}, cpu, torch.float32)[3] is None
