"""Console table, results.json, report.md and PNG plots from the benchmark rows.

`python benchmarks/report.py [results.json]` redraws report.md and the plots from a saved run."""
import json
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional

SIMD_FLAG_PREFIXES = ("sse4", "avx", "fma", "amx", "f16c", "neon", "asimd", "sve")
KEY_FIELDS = ["device", "precision", "suite", "case", "shape", "layout", "batch", "op"]


def geomean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _fmt(value, spec=".3g", missing="-") -> str:
    if value is None:
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def _ms(value) -> str:
    # Microsecond resolution for the per-call overhead rows (0.0108 ms), ms for the rest.
    return _fmt(value, ".4f" if value is not None and value < 1 else ".3f")


def _mem(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


# (header, width, formatter) of the console / Markdown table.
COLUMNS = [
    ("suite", 12, lambda r: r["suite"]),
    ("case", 22, lambda r: r["case"]),
    ("shape", 26, lambda r: r["shape"]),
    ("layout", 6, lambda r: r["layout"]),
    ("N", 3, lambda r: str(r["batch"])),
    ("op", 15, lambda r: r["op"]),
    ("torch ms", 9, lambda r: _ms(r.get("torch_ms"))),
    ("convpool ms", 11, lambda r: _ms(r.get("convpool_ms"))),
    ("R", 6, lambda r: _fmt(r.get("R"), ".2f")),
    ("R cpu", 6, lambda r: _fmt(r.get("R_cpu"), ".2f")),
    ("rate torch/cp", 19, lambda r: (f"{_fmt(r.get('torch_rate'), '.3g')}/"
                                     f"{_fmt(r.get('convpool_rate'), '.3g')} {r['unit']}"
                                     if r.get("unit") else "-")),
    ("err vs torch abs/rel", 19, lambda r: f"{_fmt(r.get('err_torch_abs'), '.1e')}/"
                                           f"{_fmt(r.get('err_torch_rel'), '.1e')}"),
    ("err vs f64 abs/rel", 19, lambda r: f"{_fmt(r.get('err_f64_abs'), '.1e')}/"
                                         f"{_fmt(r.get('err_f64_rel'), '.1e')}"),
    ("torch rel vs f64", 8, lambda r: _fmt(r.get("torch_err_f64_rel"), ".1e")),
    ("mem MiB torch/cp", 13, lambda r: f"{_mem(r.get('torch_mem'))}/{_mem(r.get('convpool_mem'))}"),
    # The CPU algorithm convpool ran (heuristic's or, with --autotune, the tuned one).
    ("algorithm", 27, lambda r: r.get("algorithm") or "-"),
    ("flag", 0, lambda r: f"FLAG: {r['flag']}" if r.get("flag") else (
        f"note: {r['note']}" if r.get("note") else "")),
]


def console_header() -> str:
    return "  ".join(h.ljust(w) for h, w, _ in COLUMNS).rstrip()


def console_line(row: Dict) -> str:
    return "  ".join(f(row).ljust(w) for _, w, f in COLUMNS).rstrip()


def summarize(rows: List[Dict]) -> List[Dict]:
    """Geometric mean of R per (device, precision, suite, op), plus an 'all' line per
    (device, precision, kind) where kind is conv, transpose, pool or model."""
    groups: "OrderedDict[tuple, List[Dict]]" = OrderedDict()
    for row in rows:
        op = f"{row['kind']} {row['op']}"
        groups.setdefault((row["device"], row["precision"], row["suite"], op), []).append(row)
        groups.setdefault((row["device"], row["precision"], "all", op), []).append(row)
    summary = []
    for (device, precision, suite, op), members in groups.items():
        summary.append({
            "device": device, "precision": precision, "suite": suite, "op": op,
            "geomean_R": geomean([m.get("R") for m in members]),
            "geomean_R_cpu": geomean([m.get("R_cpu") for m in members]),
            "rows": len(members), "flagged": sum(1 for m in members if m.get("flag")),
        })
    summary.sort(key=lambda s: (s["device"], s["precision"], s["suite"].startswith("all"),
                                s["suite"]))
    return summary


def summary_lines(summary: List[Dict]) -> List[str]:
    lines = []
    for s in summary:
        r = s["geomean_R"]
        verdict = "" if r is None else ("faster" if r > 1 else "slower")
        lines.append(f"{s['device']:<5} {s['precision']:<13} {s['suite']:<13} {s['op']:<16} "
                     f"geomean R = {_fmt(r, '.2f')} ({verdict}; {s['rows']} rows, "
                     f"{s['flagged']} flagged)"
                     + (f"  R cpu-time = {s['geomean_R_cpu']:.2f}" if s.get("geomean_R_cpu")
                        else ""))
    return lines


def algorithm_summary(rows: List[Dict]) -> List[Dict]:
    """Per (device, precision, kind op) over the rows that timed every algorithm (run.py
    --algorithms): rows, rows where the heuristic picked the fastest, the geometric mean and the
    worst of heuristic time / fastest time, and the rows (suite case layout N) of the worst; with
    --autotune also the tuned choice's: rows where it is the fastest, geomean tuned / fastest,
    geomean and worst (largest) tuned / heuristic."""
    groups: "OrderedDict[tuple, List[Dict]]" = OrderedDict()
    for row in rows:
        if row.get("heuristic_over_fastest"):
            groups.setdefault((row["device"], row["precision"], f"{row['kind']} {row['op']}"),
                              []).append(row)
    out = []
    for (device, precision, op), members in groups.items():
        worst = max(members, key=lambda r: r["heuristic_over_fastest"])
        out.append({
            "device": device, "precision": precision, "op": op, "rows": len(members),
            "heuristic_fastest": sum(1 for m in members if m["heuristic"] == m["fastest"]),
            "geomean": geomean([m["heuristic_over_fastest"] for m in members]),
            "worst": worst["heuristic_over_fastest"],
            "worst_row": (f"{worst['suite']} {worst['case']} {worst['layout']} N={worst['batch']}: "
                          f"{worst['heuristic']} vs {worst['fastest']}"),
        })
        tuned = [m for m in members if "tuned_over_heuristic" in m]
        if tuned:
            worst = max(tuned, key=lambda r: r["tuned_over_heuristic"])
            out[-1].update({
                "tuned_rows": len(tuned),
                "tuned_fastest": sum(1 for m in tuned if m["tuned"] == m["fastest"]),
                "tuned_geomean": geomean([m["tuned_over_fastest"] for m in tuned]),
                "tuned_over_heuristic": geomean([m["tuned_over_heuristic"] for m in tuned]),
                "tuned_worst_over_heuristic": worst["tuned_over_heuristic"],
                "tuned_worst_row": (f"{worst['suite']} {worst['case']} {worst['layout']} "
                                    f"N={worst['batch']}: {worst['tuned']} vs "
                                    f"{worst['heuristic']}"),
            })
    return out


def algorithm_summary_lines(summary: List[Dict]) -> List[str]:
    lines = ["Heuristic vs the fastest algorithm (each forced; time of the heuristic's / fastest):"]
    for s in summary:
        lines.append(f"{s['device']:<5} {s['precision']:<13} {s['op']:<22} "
                     f"{s['heuristic_fastest']}/{s['rows']} rows fastest, geomean "
                     f"{s['geomean']:.2f}, worst {s['worst']:.2f} ({s['worst_row']})")
        if "tuned_rows" in s:
            lines.append(f"{'':<5} {'':<13} {'  tuned':<22} {s['tuned_fastest']}/"
                         f"{s['tuned_rows']} rows fastest, geomean {s['tuned_geomean']:.2f}; "
                         f"tuned / heuristic geomean {s['tuned_over_heuristic']:.2f}, worst "
                         f"{s['tuned_worst_over_heuristic']:.2f} ({s['tuned_worst_row']})")
    return lines


def write_json(path: str, meta: Dict, rows: List[Dict], summary: List[Dict]):
    def clean(value):  # JSON has no inf / nan
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    with open(path, "w") as out:
        json.dump({"meta": meta, "summary": [{k: clean(v) for k, v in s.items()} for s in summary],
                   "rows": [{k: clean(v) for k, v in r.items()} for r in rows]}, out, indent=1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def plot_groups(rows: List[Dict]) -> "OrderedDict[tuple, List[Dict]]":
    groups: "OrderedDict[tuple, List[Dict]]" = OrderedDict()
    for row in rows:
        groups.setdefault((row["device"], row["precision"], row["suite"]), []).append(row)
    return groups


def write_plots(out_dir: str, rows: List[Dict], summary: List[Dict]) -> List[str]:
    """One horizontal bar chart of R per layer per (device, precision, suite), log axis, green
    for faster (R > 1), red for slower, hatched + 'FLAG' when the row is flagged; plus one
    chart of the geometric means per suite and op. Returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faster, slower = "#2a9d3f", "#d1495b"
    files = []

    def bar_chart(labels, values, flags, groups, title, path):
        height = max(2.5, 0.28 * len(labels) + 1.6)
        fig, ax = plt.subplots(figsize=(11, height))
        positions = list(range(len(labels)))[::-1]  # first row at the top
        finite = [v for v in values if v]
        for y, value, flag in zip(positions, values, flags):
            if value:
                # Bars start at R = 1 and grow right (faster) or left (slower).
                ax.barh(y, value - 1.0, left=1.0, color=faster if value > 1 else slower,
                        hatch="//" if flag else None, edgecolor="black" if flag else None,
                        height=0.7)
                ax.text(value * (1.04 if value > 1 else 0.96), y,
                        f"{value:.2f}" + ("  FLAG" if flag else ""), va="center",
                        ha="left" if value > 1 else "right", fontsize=8)
            else:
                ax.text(1.0, y, "  ERROR (no timing)", va="center", ha="left", fontsize=8,
                        color="black")
        for y, (group, previous) in zip(positions[1:], zip(groups[1:], groups)):
            if group != previous:  # a thin rule between cases / suites
                ax.axhline(y + 0.5, color="grey", linewidth=0.6)
        ax.set_xscale("log")
        low = min(finite + [1.0]) / 2.2
        high = max(finite + [1.0]) * 2.2
        ax.set_xlim(low, high)
        # Plain-number ticks (0.2, 0.5, 1, 2, ...) read faster than powers of ten.
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
        ticks = [m * 10.0 ** e for e in range(-4, 5) for m in (1, 2, 5)]
        ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if low <= t <= high]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_yticks(positions)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_xlabel("R = torch time / convpool time  (log scale; > 1: convpool faster)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color=faster, label="convpool faster"),
                           Patch(color=slower, label="convpool slower")],
                  loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    for (device, precision, suite), members in plot_groups(rows).items():
        labels = [f"{m['case']} | {m['op']} | {m['layout']} N={m['batch']}" for m in members]
        name = f"R_{_slug(device)}_{_slug(precision)}_{_slug(suite)}.png"
        bar_chart(labels, [m.get("R") for m in members], [bool(m.get("flag")) for m in members],
                  [m["case"] for m in members],
                  f"convpool vs torch.nn.functional: {suite} ({device}, {precision})",
                  os.path.join(out_dir, name))
        files.append(name)

    per_suite = [s for s in summary if not s["suite"].startswith("all")]
    if per_suite:
        labels = [f"{s['suite']} | {s['op']} ({s['device']}, {s['precision']})" for s in per_suite]
        bar_chart(labels, [s["geomean_R"] for s in per_suite], [s["flagged"] > 0 for s in per_suite],
                  [(s["device"], s["precision"], s["suite"]) for s in per_suite],
                  "Geometric mean of R per suite and operation", os.path.join(out_dir,
                                                                             "R_summary.png"))
        files.insert(0, "R_summary.png")
    return files


def write_markdown(path: str, meta: Dict, rows: List[Dict], summary: List[Dict],
                   plots: List[str], method: str):
    lines = ["# convpool vs torch.nn.functional", ""]
    for key, value in meta.items():
        if key == "cpu_flags":  # the full list is in results.json; the SIMD ones matter here
            simd = [f for f in str(value).split() if f.startswith(SIMD_FLAG_PREFIXES)]
            lines.append(f"- cpu_flags (SIMD; all in results.json): {' '.join(simd)}")
        elif key not in ("command", "heuristic_vs_fastest"):
            lines.append(f"- {key}: {value}")
    lines += [f"- command: `{meta.get('command', '')}`", ""]
    flagged = [r for r in rows if r.get("flag")]
    cores = os.cpu_count() or 1
    loads = [float(str(meta.get(k, "0")).split()[0] or 0)
             for k in ("load_average_at_start", "load_average_at_end")]
    if max(loads) > cores:
        # Other processes competed for the cores: wall-clock times (and R) are unreliable.
        lines += [f"> **Warning: the 1-minute load average reached {max(loads):.1f} on {cores} "
                  "cores during this run; other processes competed for the CPU, so times and R "
                  "are noisy (with several threads, R cpu too). Errors and flags are unaffected. "
                  "Compare with --threads 1 or rerun on an idle machine.**", ""]
    lines += ["## Summary", "",
              "Geometric mean of R = torch time / convpool time (R > 1: convpool faster).", "",
              "R cpu: the same ratio of process CPU time per call (all threads), which other "
              "processes competing for the cores disturb much less than wall time (CPU only).",
              "",
              "| device | precision | suite | op | geomean R | geomean R cpu | rows | flagged |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for s in summary:
        suite = f"**{s['suite']}**" if s["suite"].startswith("all") else s["suite"]
        lines.append(f"| {s['device']} | {s['precision']} | {suite} | {s['op']} | "
                     f"{_fmt(s['geomean_R'], '.2f')} | {_fmt(s.get('geomean_R_cpu'), '.2f')} | "
                     f"{s['rows']} | {s['flagged']} |")
    if meta.get("heuristic_vs_fastest"):
        lines += ["", "## The heuristic against the fastest algorithm", "",
                  "Every applicable CPU algorithm of each single-op row, forced one by one and "
                  "timed in turn (run.py --algorithms); the ratio is the heuristic's time over "
                  "the fastest's (1.00: the heuristic picks the fastest). Per-row times are in "
                  "results.json (`algorithm_ms`).", "",
                  "| device | precision | op | rows | heuristic fastest | geomean | worst | worst row |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for s in meta["heuristic_vs_fastest"]:
            lines.append(f"| {s['device']} | {s['precision']} | {s['op']} | {s['rows']} | "
                         f"{s['heuristic_fastest']} | {s['geomean']:.2f} | {s['worst']:.2f} | "
                         f"{s['worst_row']} |")
        tuned = [s for s in meta["heuristic_vs_fastest"] if "tuned_rows" in s]
        if tuned:
            lines += ["", "With --autotune, the tuned choice from the same timings (tuned / "
                      "heuristic < 1: tuning beat the heuristic; the heuristic within 10% of "
                      "tuning: geomean >= 0.91).", "",
                      "| device | precision | op | rows | tuned fastest | tuned / fastest | "
                      "tuned / heuristic | worst | worst row |",
                      "|---|---|---|---:|---:|---:|---:|---:|---|"]
            for s in tuned:
                lines.append(f"| {s['device']} | {s['precision']} | {s['op']} | "
                             f"{s['tuned_rows']} | {s['tuned_fastest']} | "
                             f"{s['tuned_geomean']:.2f} | {s['tuned_over_heuristic']:.2f} | "
                             f"{s['tuned_worst_over_heuristic']:.2f} | {s['tuned_worst_row']} |")
    lines += ["", f"**{len(flagged)} of {len(rows)} rows flagged** (error above tolerance, "
              "wrong indices or layout, or a crash).", ""]
    if "R_summary.png" in plots:
        lines += ["![geomean R per suite](R_summary.png)", ""]
    if flagged:
        lines += ["## Flagged rows", ""]
        lines += [f"- **FLAG** {r['device']} {r['precision']} {r['suite']} {r['case']} "
                  f"({r['shape']}) {r['layout']} N={r['batch']} {r['op']}: {r['flag']}"
                  for r in flagged]
        lines.append("")
    lines += ["## All rows", ""]
    headers = [h for h, _, _ in COLUMNS]
    for (device, precision, suite), members in plot_groups(rows).items():
        lines += [f"### {suite} ({device}, {precision})", "",
                  "| " + " | ".join(headers) + " |",
                  "|" + "|".join("---" for _ in headers) + "|"]
        for row in members:
            cells = [f(row).replace("|", "/") for _, _, f in COLUMNS]
            if row.get("flag"):
                cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
        name = f"R_{_slug(device)}_{_slug(precision)}_{_slug(suite)}.png"
        if name in plots:
            lines += ["", f"![R for {suite}]({name})"]
        lines.append("")
    lines += ["## Method", "", method.strip(), ""]
    with open(path, "w") as out:
        out.write("\n".join(lines))


def rerender(json_path: str):
    """Rewrite report.md and the plots next to an existing results.json (no re-measuring)."""
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import layers
    import measure
    import models
    with open(json_path) as source:
        data = json.load(source)
    out_dir = os.path.dirname(os.path.abspath(json_path))
    rows = [{k: (float(v) if v in ("inf", "nan", "-inf") else v) for k, v in r.items()}
            for r in data["rows"]]
    summary = summarize(rows)
    plots = write_plots(out_dir, rows, summary)
    write_markdown(os.path.join(out_dir, "report.md"), data["meta"], rows, summary, plots,
                   "\n\n".join([measure.__doc__, layers.__doc__, models.__doc__]))
    print("\n".join(summary_lines(summary)))


if __name__ == "__main__":
    import sys
    rerender(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "out", "results.json"))
