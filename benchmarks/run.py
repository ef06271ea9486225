"""convpool vs torch.nn.functional: correctness and speed, layer by layer and whole models.

    python benchmarks/run.py --quick                  # ~2 minutes on 2 CPU cores
    python benchmarks/run.py --device all --dtype float32 bfloat16 --suite resnet18 pool
    python benchmarks/run.py --quick --autotune       # CPU algorithms chosen by timing them

Writes under --out (default benchmarks/out): results.json, report.md and PNG plots of
R = torch time / convpool time; prints the table as it goes. See measure.py for how time, error,
tolerance and memory are measured, suites.py for where the shapes come from.
"""
import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import convpool  # noqa: E402
import layers  # noqa: E402
import measure  # noqa: E402
import models  # noqa: E402
import report  # noqa: E402
import suites  # noqa: E402
from convpool.backends import cpu as cpu_backend  # noqa: E402
from layers import Precision  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu",
                        help="'all': the CPU, and CUDA when a GPU is present")
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=None,
                        help="default: float32 on the CPU; float32 (TF32 off and on), float16 "
                             "and bfloat16 on CUDA")
    parser.add_argument("--suite", nargs="+", choices=suites.ALL_SUITES + suites.HIDDEN_SUITES,
                        default=None, help="default: all (" + ", ".join(suites.ALL_SUITES) + ")")
    parser.add_argument("--quick", action="store_true",
                        help="representative subset, small batches, short timings (~2 min)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for both sides (default: all cores available)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "out"))
    parser.add_argument("--reps", type=int, default=None,
                        help="alternated timing rounds per side (default 3, quick 2)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per blocked_autorange (default 0.2, quick 0.01)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="the training batch size (default: quick 2, CPU 8, CUDA 32)")
    parser.add_argument("--layout", nargs="+", choices=["NCHW", "NHWC"], default=["NCHW", "NHWC"],
                        help="NHWC = torch.channels_last")
    parser.add_argument("--image-size", type=int, default=None,
                        help="model-level input size (default: quick 64, else 224)")
    parser.add_argument("--autotune", action="store_true",
                        help="convpool.backends.cpu.benchmark = True: each new problem times its "
                             "CPU algorithms first (in the untimed correctness call); the report "
                             "gives the tuning time")
    parser.add_argument("--algorithms", action="store_true",
                        help="also time every applicable CPU algorithm of each single-op row, "
                             "forced one by one: the report gives the fastest and how far the "
                             "heuristic's choice is from it (the data to re-derive the heuristic "
                             "on this machine)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    args.suite = args.suite or list(suites.ALL_SUITES)
    args.reps = args.reps or (2 if args.quick else 3)
    if args.min_time is None:
        args.min_time = 0.01 if args.quick else 0.2
    args.image_size = args.image_size or (64 if args.quick else 224)
    return args


def devices_for(choice: str) -> List[torch.device]:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    devices = [torch.device("cpu")] if choice in ("cpu", "all") else []
    if choice in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def precisions_for(device: torch.device, dtype_names) -> List[Precision]:
    if dtype_names is None:
        dtype_names = ["float32"] if device.type == "cpu" else ["float32", "float16", "bfloat16"]
    precisions = []
    for name in dtype_names:
        dtype = DTYPES[name]
        if device.type == "cuda" and dtype == torch.float32:
            precisions += [Precision(dtype, tf32=False), Precision(dtype, tf32=True)]
        else:
            precisions.append(Precision(dtype))
    return precisions


def cpu_info() -> Dict[str, str]:
    info = {"cpu_model": platform.processor() or "unknown", "cpu_flags": ""}
    family = model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and info["cpu_model"] in ("unknown", "x86_64", ""):
                    info["cpu_model"] = value.strip()
                elif key in ("flags", "Features") and not info["cpu_flags"]:
                    info["cpu_flags"] = value.strip()
                elif key == "cpu family" and family is None:
                    family = value.strip()
                elif key == "model" and model is None:
                    model = value.strip()
    except OSError:
        pass
    # A virtual machine's model name can be as vague as "AMD EPYC": the family and model tell
    # the generation (AMD family 25: Zen 3 for models 0-15, Zen 4 for 16-31 and 96-127).
    if family is not None and model is not None:
        info["cpu_model"] += f" (family {family}, model {model})"
    return info


def cpu_peak(threads: int) -> float:
    """The measured fp32 FMA peak in GFLOP/s (convpool._C._cpu_fma_peak: a loop of independent
    FMAs in the widest vectors of the active ISA on `threads` threads), the number the rows'
    `convpool_pct_peak` refers to."""
    from convpool import _C
    return _C._cpu_fma_peak(threads, 0.2)


def gpu_info() -> Dict[str, str]:
    if not torch.cuda.is_available():
        return {"gpu": "none"}
    info = {"gpu": torch.cuda.get_device_name(0), "cuda_runtime": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version())}
    try:
        info["gpu_driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        info["gpu_driver"] = "unknown (nvidia-smi not found)"
    return info


def metadata(args, devices) -> Dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({platform.machine()}, {platform.platform()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": models.torchvision.__version__,
        "convpool": getattr(convpool, "__version__", "unknown"),
        **cpu_info(), **gpu_info(),
        "threads": torch.get_num_threads(),
        "cpu_fma_peak_gflops": round(cpu_peak(torch.get_num_threads()), 1),
        "cpu_fma_peak": f"fp32, {torch.get_num_threads()} threads, {convpool._C._cpu_isa()} FMA loop",
        # Other work on the machine makes timings noisy: record how busy it was.
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "devices": ", ".join(str(d) for d in devices),
        "tf32": ("per precision row: 'float32' = TF32 off, 'float32+tf32' = TF32 on "
                 "(torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32, "
                 "same for both sides)" if any(d.type == "cuda" for d in devices) else "n/a (CPU)"),
        "autotune": args.autotune,
        "quick": args.quick, "timing_rounds": args.reps, "min_run_time_s": args.min_time,
        "train_batch": ", ".join(f"{d.type} {train_batch_for(args, d)}" for d in devices),
        "layouts": " ".join(args.layout),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def train_batch_for(args, device: torch.device) -> int:
    return args.train_batch or (2 if args.quick else (32 if device.type == "cuda" else 8))


# Case type -> (row kind, function building its ops, the op names).
LAYER_KINDS = {
    suites.ConvCase: ("conv", layers.conv_ops, layers.CONV_OPS),
    suites.TransposeCase: ("transpose", layers.transpose_ops, layers.TRANSPOSE_OPS),
    suites.PoolCase: ("pool", layers.pool_ops, layers.POOL_OPS),
}


def plan(args, device: torch.device):
    """(kind, suite, case_name, shape, channels_last, batch, op_count, make_ops) per case."""
    train_batch = train_batch_for(args, device)
    batches = sorted({1, train_batch})  # --train-batch 1: inference batch only
    tasks = []
    for case in suites.cases_for([s for s in args.suite if s not in ("models", "overhead")],
                                 args.quick):
        kind, make, op_names = LAYER_KINDS[type(case)]
        for layout in args.layout:
            for batch in batches:
                tasks.append((kind, case.suite, case.name, case.describe(), layout == "NHWC",
                              batch, len(op_names),
                              lambda p, g, case=case, batch=batch, layout=layout, make=make:
                              make(case, batch, layout == "NHWC", p, device, g)))
    if "overhead" in args.suite:
        tasks.append(("overhead", "overhead", "tiny problems", layers.OVERHEAD_SHAPE, False, 1,
                      len(layers.OVERHEAD_OPS),
                      lambda p, g: layers.overhead_ops(p, device, g)))
    if "models" in args.suite:
        model_layouts = ["NCHW"] if args.quick else args.layout
        model_batches = [train_batch] if args.quick else batches
        for name in models.MODEL_NAMES:
            for layout in model_layouts:
                for batch in model_batches:
                    tasks.append(("model", "models", name,
                                  f"3x{args.image_size}x{args.image_size}", layout == "NHWC",
                                  batch, len(models.model_op_names(name, args.quick)),
                                  lambda p, g, name=name, batch=batch, layout=layout:
                                  models.model_ops(name, batch, args.image_size, layout == "NHWC",
                                                   p, device, g, quick=args.quick)))
    return tasks


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu_backend.benchmark = args.autotune
    os.makedirs(args.out, exist_ok=True)
    devices = devices_for(args.device)
    from tqdm import tqdm

    work = [(device, precision, task) for device in devices
            for precision in precisions_for(device, args.dtype) for task in plan(args, device)]
    meta = metadata(args, devices)
    print(f"convpool {meta['convpool']} vs torch {meta['torch']} | threads: "
          f"{meta['threads']} (torch.set_num_threads) | CPU: {meta['cpu_model']} | GPU: "
          f"{meta['gpu']} | {meta['date']}")
    print(report.console_header())
    rows: List[Dict] = []
    started = time.perf_counter()
    current = None
    total_ops = sum(task[6] for _, _, task in work)
    with tqdm(total=total_ops, unit="op", file=sys.stderr, dynamic_ncols=True,
              disable=None) as progress:
        for device, precision, (kind, suite, case_name, shape, channels_last, batch, op_count,
                                make_ops) in work:
            precision.apply(device)
            if (device, precision.label) != current:
                current = (device, precision.label)
                settings = (f"TF32 {'on' if precision.tf32 else 'off'} for both sides "
                            f"(cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32})"
                            if device.type == "cuda" else f"{torch.get_num_threads()} threads")
                progress.write(f"== {device.type} {precision.label}: {settings} ==")
            progress.set_description(f"{suite}/{case_name}"[:40])
            identity = {"device": device.type, "precision": precision.label,
                        "dtype": str(precision.dtype).replace("torch.", ""), "kind": kind,
                        "suite": suite, "case": case_name, "shape": shape,
                        "layout": "NHWC" if channels_last else "NCHW", "batch": batch}
            generator = torch.Generator().manual_seed(len(rows) + 1)
            try:
                ops = make_ops(precision, generator)
            except Exception as error:  # building inputs or converting a model failed
                ops = []
                row = {**identity, "op": "setup", **{c: None for c in layers.ERROR_COLUMNS},
                       "flag": f"ERROR {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                rows.append(row)
                progress.write(report.console_line(row))
                progress.update(op_count)
            for op in ops:
                row = {**identity, **layers.run_op(op, precision, device, args.threads,
                                                   args.reps, args.min_time)}
                if args.algorithms and device.type == "cpu" and op.registry_call is not None:
                    row.update(layers.time_algorithms(
                        op, args.threads, args.reps, args.min_time,
                        tuned=row.get("algorithm") if args.autotune else None))
                rows.append(row)
                progress.write(report.console_line(row))
                progress.update(1)
            del ops
    meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    for row in rows:  # fp32 CPU conv rows: the share of the measured FMA peak
        if (row["device"] == "cpu" and row["dtype"] == "float32" and row.get("unit") == "GFLOP/s"
                and row.get("convpool_rate")):
            row["convpool_pct_peak"] = 100 * row["convpool_rate"] / meta["cpu_fma_peak_gflops"]
    meta["load_average_at_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if args.autotune:
        problems, seconds, _ = cpu_backend.tuning_stats()
        meta["tuning"] = (f"{problems} problems timed in {seconds:.1f} s "
                          f"({100 * seconds / meta['wall_time_s']:.1f}% of the run)")

    summary = report.summarize(rows)
    lines = report.summary_lines(summary)
    if args.algorithms:
        meta["heuristic_vs_fastest"] = report.algorithm_summary(rows)
        lines += [""] + report.algorithm_summary_lines(meta["heuristic_vs_fastest"])
    flagged = [r for r in rows if r.get("flag")]
    print("\nSummary (geometric mean of R = torch time / convpool time; > 1: convpool faster)")
    print("\n".join(lines))
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"WARNING: load average {load:.1f} on {os.cpu_count()} cores: other processes "
              "competed for the CPU, times and R are noisy (errors are not); compare with "
              "--threads 1 or on an idle machine")
    if args.autotune:
        print(f"autotuning: {meta['tuning']}")
    print(f"{len(flagged)} of {len(rows)} rows flagged"
          + (": see FLAG above and report.md" if flagged else ""))
    plots = [] if args.no_plots else report.write_plots(args.out, rows, summary)
    report.write_json(os.path.join(args.out, "results.json"), meta, rows, summary)
    method = "\n\n".join([measure.__doc__, layers.__doc__, models.__doc__])
    report.write_markdown(os.path.join(args.out, "report.md"), meta, rows, summary, plots, method)
    print(f"wrote {args.out}/results.json, report.md and {len(plots)} PNG plot(s) "
          f"in {meta['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
