"""The benchmark cannot rot: a tiny end-to-end run, and the flagging of wrong results."""
import json
import math
import os
import sys

import pytest
import torch

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import layers  # noqa: E402
import measure  # noqa: E402
import models  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import suites  # noqa: E402
from layers import Op, Precision  # noqa: E402

ERROR_COLUMNS = ["err_torch_abs", "err_torch_rel", "err_f64_abs", "err_f64_rel"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:
        assert run.main(["--suite", "tiny", "--reps", "1", "--min-time", "0", "--threads", "1",
                         "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # run.main, a script's main, sets it for the whole process
    return out


def test_tiny_run_writes_json_markdown_and_plots(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    for key in ["torch", "convpool", "cpu_model", "cpu_flags", "gpu", "threads", "date", "machine"]:
        assert key in results["meta"], key
    assert results["meta"]["threads"] == 1
    assert results["meta"]["cpu_fma_peak_gflops"] > 0
    rows = results["rows"]
    # 1 conv case x 4 ops + 1 pool case x 3 ops + 1 transposed-conv case x 2 ops, x 2 layouts x
    # 2 batch sizes
    assert len(rows) == (4 + 3 + 2) * 2 * 2
    assert {r["op"] for r in rows} == (set(layers.CONV_OPS) | set(layers.POOL_OPS)
                                       | set(layers.TRANSPOSE_OPS))
    assert {r["kind"] for r in rows} == {"conv", "pool", "transpose"}
    for row in rows:
        for column in ERROR_COLUMNS + ["torch_ms", "convpool_ms", "R", "R_cpu", "torch_mem",
                                       "convpool_mem"]:
            assert column in row and row[column] is not None, (column, row)
        assert row["flag"] is None, row  # convpool is correct on these
    # fp32 conv rows give their share of the measured FMA peak
    conv_rows = [r for r in rows if r["kind"] == "conv"]
    assert all(r["convpool_pct_peak"] == pytest.approx(
        100 * r["convpool_rate"] / results["meta"]["cpu_fma_peak_gflops"]) for r in conv_rows)
    index_rows = [r for r in rows if r["op"] == "forward+indices"]
    assert index_rows and all(r["index_mismatches"] == 0 for r in index_rows)
    markdown = (tiny_run / "report.md").read_text()
    assert "geomean R" in markdown and "| tiny |" in markdown
    pngs = sorted(p.name for p in tiny_run.glob("*.png"))
    assert "R_summary.png" in pngs and "R_cpu_float32_tiny.png" in pngs
    assert all((tiny_run / p).stat().st_size > 10_000 for p in pngs)


def _op(convpool_fn, reductions=(9,)):
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    return Op("forward", lambda: (torch.nn.functional.conv2d(x, w),),
              lambda: (convpool_fn(x, w),),
              lambda: (torch.nn.functional.conv2d(x.double(), w.double()),), list(reductions))


def test_wrong_result_is_flagged():
    precision = Precision(torch.float32)
    right = layers.run_op(_op(torch.nn.functional.conv2d), precision, torch.device("cpu"), 1, 1, 0)
    assert right["flag"] is None
    # One element off by 1e-3 of the largest output: far above float32's allowance.
    def slightly_wrong(x, w):
        out = torch.nn.functional.conv2d(x, w)
        out.view(-1)[7] += 1e-3 * out.abs().max()
        return out
    wrong = layers.run_op(_op(slightly_wrong), precision, torch.device("cpu"), 1, 1, 0)
    assert wrong["flag"] and "vs f64" in wrong["flag"] and "vs torch" in wrong["flag"]
    assert wrong["err_f64_rel"] == pytest.approx(1e-3, rel=1e-2)
    # NaN where the reference has none, and a crash, are flagged too.
    nan = layers.run_op(_op(lambda x, w: torch.full_like(torch.nn.functional.conv2d(x, w), math.nan)),
                        precision, torch.device("cpu"), 1, 1, 0)
    assert nan["flag"] and nan["err_f64_abs"] == math.inf

    def crash(x, w):
        raise RuntimeError("kernel exploded")
    crashed = layers.run_op(_op(crash), precision, torch.device("cpu"), 1, 1, 0)
    assert crashed["flag"] == "ERROR in convpool: RuntimeError: kernel exploded"
    assert all(column in crashed for column in ERROR_COLUMNS)
    # The flag reaches the console and the Markdown report, not hidden.
    identity = {"device": "cpu", "precision": "float32", "kind": "conv", "suite": "unit",
                "case": "wrong", "shape": "3->4 3x3", "layout": "NCHW", "batch": 2}
    rows = [{**identity, **wrong}, {**identity, **crashed}]
    assert "FLAG: vs f64" in report.console_line(rows[0])
    assert "FLAG: ERROR" in report.console_line(rows[1])


def test_wrong_layout_and_indices_are_flagged():
    x = torch.randn(1, 2, 6, 6).contiguous(memory_format=torch.channels_last)
    values, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    op = Op("forward+indices", None, None, None, [1, 1], indices_at=1)
    precision = Precision(torch.float32)
    row = layers.compare(op, (values, indices), (values.contiguous(), indices.flip(-1)),
                         (values.double(), indices), precision)
    assert "layout" in row["flag"] and "indices differ" in row["flag"]
    assert row["index_mismatches"] > 0


def test_markdown_lists_flagged_rows(tmp_path):
    row = {"device": "cpu", "precision": "float32", "kind": "conv", "suite": "unit", "case": "c",
           "shape": "s", "layout": "NCHW", "batch": 1, "op": "forward", "R": 2.0,
           "flag": "vs f64 1 > 0.1", **{c: 1.0 for c in ERROR_COLUMNS}}
    summary = report.summarize([row])
    report.write_markdown(str(tmp_path / "report.md"), {"date": "today"}, [row], summary, [], "m")
    text = (tmp_path / "report.md").read_text()
    assert "**FLAG: vs f64 1 > 0.1**" in text and "1 of 1 rows flagged" in text


def test_tolerance_grows_with_reduction_length():
    rtol_9, atol_9 = measure.tolerance(torch.float32, 9)
    rtol_900, atol_900 = measure.tolerance(torch.float32, 900)
    assert rtol_900 == pytest.approx(10 * rtol_9) and atol_900 == pytest.approx(10 * atol_9)
    assert measure.tolerance(torch.float32, 9, tf32=True)[0] > rtol_9
    assert measure.tolerance(torch.bfloat16, 9)[0] > measure.tolerance(torch.float16, 9)[0]


def test_model_ops_compare_stock_and_converted():
    precision = Precision(torch.float32)
    ops = models.model_ops("resnet18", 2, 32, False, precision, torch.device("cpu"),
                           torch.Generator().manual_seed(0))
    for op in ops:
        row = layers.run_op(op, precision, torch.device("cpu"), 1, 1, 0, measure_memory=False)
        assert row["flag"] is None, row
        assert all(row[c] is not None for c in ERROR_COLUMNS)


def test_disagreeing_with_an_inaccurate_torch_is_a_note_not_a_flag():
    x = torch.randn(1, 3, 6, 6)
    w = torch.randn(2, 3, 3, 3)
    exact = torch.nn.functional.conv2d(x.double(), w.double())
    torch_out = (exact + 0.5).float()  # torch is the wrong side here
    op = Op("forward", None, None, None, [27])
    row = layers.compare(op, (torch_out,), (exact.float(),), (exact,), Precision(torch.float32))
    assert row["flag"] is None and "torch itself off" in row["note"]
    assert "note: torch itself off" in report.console_line(
        {"suite": "u", "case": "c", "shape": "s", "layout": "NCHW", "batch": 1, "op": "forward",
         **row})


def test_overhead_suite_is_in_the_quick_report_and_correct(tmp_path):
    # The default suites (what `run.py --quick` runs) include it; every row is timed and correct.
    assert run.parse_args(["--quick"]).suite == suites.ALL_SUITES and "overhead" in suites.ALL_SUITES
    tasks = [t for t in run.plan(run.parse_args(["--quick", "--suite", "overhead"]),
                                 torch.device("cpu"))]
    assert [(kind, suite) for kind, suite, *_ in tasks] == [("overhead", "overhead")]
    precision = Precision(torch.float32)
    ops = layers.overhead_ops(precision, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert [op.name for op in ops] == layers.OVERHEAD_OPS
    for op in ops:
        row = layers.run_op(op, precision, torch.device("cpu"), 1, 1, 0, measure_memory=False)
        assert row["flag"] is None, row
        assert row["R"] > 0 and all(row[c] is not None for c in ERROR_COLUMNS)
    # Per-call times of microseconds keep their digits in the table (ms column).
    assert report._ms(0.01084) == "0.0108" and report._ms(12.3456) == "12.346"


@pytest.mark.parametrize("autotune", [False, True])
def test_algorithms_mode_times_every_applicable_algorithm(tmp_path, autotune):
    # run.py --algorithms: each single-op row with several applicable CPU algorithms times each
    # one forced, names the fastest, and the report compares the heuristic's choice with it
    # (with --autotune, the tuned choice too, from the same timings).
    from convpool.backends import cpu as cpu_backend
    threads, benchmark = torch.get_num_threads(), cpu_backend.benchmark
    try:
        assert run.main(["--suite", "tiny", "--reps", "1", "--min-time", "0", "--threads", "1",
                         "--algorithms", "--no-plots", "--out", str(tmp_path)]
                        + (["--autotune"] if autotune else [])) == 0
    finally:
        torch.set_num_threads(threads)
        cpu_backend.benchmark = benchmark
        cpu_backend.clear_tuning()
    results = json.loads((tmp_path / "results.json").read_text())
    timed = [r for r in results["rows"] if "algorithm_ms" in r]
    assert timed, "no row timed its algorithms"
    for row in timed:
        names = list(row["algorithm_ms"])
        assert len(names) >= 2 and row["heuristic"] == names[0] and row["fastest"] in names
        assert all(t > 0 for t in row["algorithm_ms"].values())
        fastest = min(row["algorithm_ms"].values())
        assert row["heuristic_over_fastest"] == pytest.approx(
            row["algorithm_ms"][row["heuristic"]] / fastest)
    # The single-op rows of a conv case: forward, grad_input, grad_weight (not fwd+bwd).
    assert {r["op"] for r in timed} <= {"forward", "grad_input", "grad_weight", "forward+indices",
                                        "backward"}
    summary = results["meta"]["heuristic_vs_fastest"]
    assert {s["op"] for s in summary} == {f"{r['kind']} {r['op']}" for r in timed}
    assert sum(s["rows"] for s in summary) == len(timed)
    markdown = (tmp_path / "report.md").read_text()
    assert "## The heuristic against the fastest algorithm" in markdown
    for row in timed:
        assert ("tuned" in row) == autotune
        if autotune:
            assert row["tuned"] == row["algorithm"] and row["tuned"] in row["algorithm_ms"]
            assert row["tuned_over_heuristic"] == pytest.approx(
                row["algorithm_ms"][row["tuned"]] / row["algorithm_ms"][row["heuristic"]])
    assert all(("tuned_rows" in s) == autotune for s in summary)
    assert ("tuned / heuristic" in markdown) == autotune


def test_fma_peak_checks_its_arguments():
    from convpool import _C
    assert _C._cpu_fma_peak(1, 0.01) > 0
    with pytest.raises(ValueError, match=r"threads must be in \[1, 4096\].*got 0 and"):
        _C._cpu_fma_peak(0, 0.01)
    with pytest.raises(ValueError, match=r"seconds in \(0, 60\], got 1 and -1"):
        _C._cpu_fma_peak(1, -1.0)


def test_decoder_rows_name_the_algorithms_convpool_runs():
    # A transposed-conv forward is conv2d_grad_input: its row's registry call is the problem
    # convpool.conv_transpose2d hands the registry, so every algorithm listed for it can be
    # forced on the real call and matches torch; the fwd+bwd row names dgrad+fprop+wgrad.
    from convpool.backends import cpu as cpu_backend
    case = suites.TransposeCase("t", "t", 6, 4, 5, 7, (4, 4), (2, 2), (1, 1), bias=True)
    for channels_last in (False, True):
        forward, fwd_bwd = layers.transpose_ops(case, 2, channels_last, Precision(torch.float32),
                                                torch.device("cpu"),
                                                torch.Generator().manual_seed(0))
        name, args = forward.registry_call
        assert name == "conv2d_grad_input"
        names = cpu_backend.algorithms(name, *args)
        assert names and forward.algorithm() == cpu_backend.selected(name, *args) == names[0]
        expected = forward.torch_fn()[0]
        for algorithm in names:
            with cpu_backend.force(algorithm):
                torch.testing.assert_close(forward.convpool_fn()[0], expected)
        parts = fwd_bwd.algorithm().split("+")
        assert len(parts) == 3 and parts[0] == names[0] and "-" not in parts
