"""The smallest regression a retrain can show (STATISTICS.md §6), on the offline Hub world.

    python benchmarks/retrain_noise.py                 # builds the world in a temporary dir
    python benchmarks/retrain_noise.py --world DIR     # a world tests/hub_world.py built
    python benchmarks/retrain_noise.py --markdown      # the tables as docs/statistics.md has them

README's quick start (example_tests/train_sae.py at its test token counts) is trained
``--runs`` times (seeds 0..N-1) and every checkpoint gated with README's table at ``fast``.
Per default-gated metric and position of the run it prints the between-run standard
deviation (random effects: the replicates' spread less their evaluation noise), the
evaluation standard error, and the smallest drop a ``{ max_drop = 0, z }`` rule detects with
80 % power for a pull request that trains once against R replicates on main
(``(c + 0.84) · se``, ``c`` Student's t at R - 1 degrees of freedom; R = 1 needs ``run_sd``,
the normal). Then README's gates through the plugin, as CI runs them: a 3-run main against
``--pr-seeds`` harmless reseeds, a quarter of the tokens, a one-run main against the same
reseeds, and main's own runs re-evaluated against the baseline they wrote.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
METRICS = ("core.reconstruction_quality.explained_variance",
           "core.model_performance_preservation.ce_loss_score",
           "core.model_behavior_preservation.kl_div_score", "core.sparsity.l0")
Z_BETA = 0.8416  # the normal's 80 % quantile: power 0.8


def world_at(path: str | None, tmp: Path) -> Path:
    """The Hub world at ``path``, or one built under ``tmp``."""
    if path:
        return Path(path)
    from tests.replicates import hub_env

    world = tmp / "world"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "hub_world.py"), str(world)],
                          env=hub_env(world), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return world


def noise_table(data: dict, runs: int) -> list[tuple[str, str, float, float, float, float]]:
    """``(metric, position, mean, between-run sd, eval se, run-to-run sd of one value)``."""
    from pytest_saebench.gates.lineage import run_place
    from pytest_saebench.results import envelope_results

    by: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for res in envelope_results(data):
        place = run_place(res.sae_id)
        for m in METRICS:
            if place is not None and res.value(m) is not None:
                by.setdefault((m, place.position), []).append((res.value(m),
                                                               res.stderr(m) or 0.0))
    out = []
    for (m, pos), rows in sorted(by.items(), key=lambda kv: (METRICS.index(kv[0][0]),
                                                              _order(kv[0][1]))):
        ys = [y for y, _ in rows]
        v = statistics.fmean(s * s for _, s in rows)
        sd = statistics.stdev(ys)
        out.append((m, pos, statistics.fmean(ys), math.sqrt(max(0.0, sd * sd - v)),
                    math.sqrt(v), sd))
    assert all(len(r) == runs for r in by.values()), {k: len(v) for k, v in by.items()}
    return out


def _order(position: str) -> int:
    return 10 ** 12 if position == "final" else int(position.partition(":")[2])


def detectable(sigma: float, se: float, reps: int, z: float) -> float:
    """The smallest drop a ``{ max_drop = 0, z }`` rule fails with 80 % power: a pull
    request of one run against ``reps`` runs on main (``reps`` 1: ``run_sd`` given)."""
    from pytest_saebench.gates.stats import critical

    c = critical(z, None if reps == 1 else reps - 1)
    return (c + Z_BETA) * math.sqrt(sigma ** 2 * (1 / reps + 1) + se ** 2 / reps + se ** 2)


VERBOSE: list[bool] = [False]


def verdicts(data: dict) -> dict[str, int]:
    """The run's regression verdicts counted (with ``--verbose`` the messages printed)."""
    from tests.replicates import regressions

    counts: dict[str, int] = {}
    for c in regressions(data):
        counts[c["status"]] = counts.get(c["status"], 0) + 1
        if VERBOSE[0] and c["status"] in ("fail", "inconclusive"):
            print(f"  {c['status']}: {c['message']}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="a Hub world tests/hub_world.py built")
    parser.add_argument("--runs", type=int, default=8, help="replicates for the noise table")
    parser.add_argument("--pr-seeds", type=int, default=5, help="reseeded pull requests")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--verbose", action="store_true",
                        help="print every failed or inconclusive gate's message")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary "
                                       "one)")
    args = parser.parse_args()
    from tests.replicates import gate, readme_table, regressions, train

    VERBOSE[0] = args.verbose
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        world = world_at(args.world, tmp)
        repo = tmp / "repo"
        repo.mkdir()
        (repo / "pyproject.toml").write_text(readme_table())
        pr_seeds = list(range(100, 100 + args.pr_seeds))
        plan = {repo / "runs" / f"seed{s}": {"seed": s} for s in range(args.runs)}
        plan.update({tmp / "pr" / f"seed{s}": {"seed": s} for s in pr_seeds})
        plan[tmp / "quarter"] = {"seed": pr_seeds[0], "training_tokens": 49_152 // 4}
        train(world, plan)
        for name in ("pr", "quarter"):
            shutil.copytree(tmp / name, repo / name)
        done, data = gate(repo, world, "--sae-path", "runs", "--sae-path", "pr",
                          "--sae-path", "quarter")
        assert data, done.stdout[-3000:] + done.stderr[-2000:]
        main_only = {**data, "saes": {k: v for k, v in data["saes"].items()
                                      if k.startswith("runs/")}}
        table = noise_table(main_only, args.runs)
        print_noise(table, args.runs, args.markdown)
        print_correlations(main_only, args.markdown)
        print_subsets(data, args.runs, pr_seeds, args.markdown)

        results: list[tuple[str, dict[str, int]]] = []
        for label, seeds in (("3-run main", [0, 1, 2]), ("1-run main", [0])):
            main_repo = tmp / label.replace(" ", "-")
            main_repo.mkdir()
            (main_repo / "pyproject.toml").write_text(readme_table())
            for s in seeds:
                shutil.copytree(repo / "runs" / f"seed{s}", main_repo / "runs" / f"seed{s}")
            done, data = gate(main_repo, world, "--sae-path", "runs",
                              "--saebench-update-baseline")
            assert done.returncode == 0, done.stdout[-3000:]
            done, data = gate(main_repo, world, "--sae-path", "runs")
            results.append((f"{label}: its own runs re-evaluated", verdicts(data)))
            for s in pr_seeds:
                pr = tmp / "pr" / f"seed{s}"
                done, data = gate(main_repo, world, "--sae-path", str(pr / "checkpoints"),
                                  "--sae-path", str(pr / "final"))
                results.append((f"{label}: reseed {s}", verdicts(data)))
            done, data = gate(main_repo, world, "--sae-path", str(tmp / "quarter" / "checkpoints"),
                              "--sae-path", str(tmp / "quarter" / "final"))
            failed = sorted(f"{c['sae']}::{c['metric']}" for c in regressions(data)
                            if c["status"] == "fail")
            results.append((f"{label}: a quarter of the tokens ({', '.join(failed) or 'none'})",
                            verdicts(data)))
        print_verdicts(results, args.markdown)
    print(f"\n{platform.processor() or platform.machine()}, {time.perf_counter() - started:.0f} s")


def print_noise(table, runs: int, markdown: bool) -> None:
    """The noise table and the smallest drops detected."""
    head = ["metric", "position", "mean", "sd between runs", "eval se"] + [
        f"z {z}, R {r}" for z in (2, 3) for r in (1, 3, 5)]
    rows = []
    for m, pos, mean, sigma, se, _sd in table:
        rows.append([m.rsplit(".", 1)[1], pos.replace("tokens:", ""), f"{mean:.4g}",
                     f"{sigma:.2g}", f"{se:.2g}"] + [f"{detectable(sigma, se, r, z):.2g}"
                                                      for z in (2, 3) for r in (1, 3, 5)])
    print(f"between-run noise over {runs} runs; smallest drop detected (80 % power, max_drop 0;"
          " R 1 needs run_sd):")
    _print(head, rows, markdown)


def _values(data: dict, metric: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{run: {position: (value, stderr)}}`` of ``metric``."""
    from pytest_saebench.gates.lineage import run_place
    from pytest_saebench.results import envelope_results

    out: dict[str, dict[str, tuple[float, float]]] = {}
    for res in envelope_results(data):
        place = run_place(res.sae_id)
        if place is not None and res.value(metric) is not None:
            out.setdefault(place.run, {})[place.position] = (res.value(metric),
                                                             res.stderr(metric) or 0.0)
    return out


def print_correlations(data: dict, markdown: bool) -> None:
    """How alike one run's deviations from the mean are at its positions: pooling the
    between-run variance over positions adds degrees of freedom only where they are not."""
    import numpy as np

    rows = []
    for m in METRICS:
        by = _values(data, m)
        runs = sorted(by)
        positions = sorted(by[runs[0]], key=_order)
        table = np.array([[by[r][p][0] for r in runs] for p in positions])
        corr = np.corrcoef(table)
        pairs = [f"{corr[i, j]:+.2f}" for i in range(len(positions))
                 for j in range(i + 1, len(positions))]
        rel = table.std(axis=1, ddof=1) / np.abs(table.mean(axis=1))
        rows.append([m.rsplit(".", 1)[1], " ".join(pairs), " ".join(f"{x:.2%}" for x in rel)])
    print("\nbetween positions (16896-33280, 16896-final, 33280-final): correlation of the runs'"
          " values; their sd relative to the mean per position:")
    _print(["metric", "correlation", "relative sd"], rows, markdown)


def print_subsets(data: dict, runs: int, pr_seeds: list[int], markdown: bool) -> None:
    """README's rules through the plugin's retrain verdict (gates.retrain.check_retrain),
    for every subset of R of the ``runs`` replicates as main: the share of reseeded pull
    requests' gates that fail, and of mains against which a quarter of the tokens fails."""
    import itertools

    from pytest_saebench.gates.regression import RegressionRule
    from pytest_saebench.gates.retrain import Replicate, compare_retrain, retrain_difference

    rules = [RegressionRule("core.reconstruction_quality.explained_variance", max_drop=0.01, z=2),
             RegressionRule("core.model_performance_preservation.ce_loss_score", max_drop=0.01,
                            z=2),
             RegressionRule("core.sparsity.l0", max_change_pct=15)]
    directions = {"core.sparsity.l0": "band"}
    rows = []
    for reps in (3, 5):
        mains = list(itertools.combinations([f"runs/seed{s}" for s in range(runs)], reps))
        false = gates = caught = 0
        for rule in rules:
            by = _values(data, rule.metric)
            for main in mains:
                for pos in by[main[0]]:
                    ref = [Replicate(*by[r][pos], 19) for r in main]
                    for s in pr_seeds:
                        new = [Replicate(*by[f"pr/seed{s}"][pos], 19)]
                        out = compare_retrain(rule, directions.get(rule.metric, "up"),
                                              retrain_difference(new, ref, rule.run_sd),
                                              "main", "")
                        gates += 1
                        false += out.status == "fail"
                if rule.metric.endswith("explained_variance"):
                    q = [Replicate(*by["quarter"]["final"], 19)]
                    out = compare_retrain(rule, "up", retrain_difference(
                        q, [Replicate(*by[r]["final"], 19) for r in main]), "main", "")
                    caught += out.status == "fail"
        rows.append([str(reps), str(len(mains)), f"{false} of {gates}",
                     f"{caught} of {len(mains)}"])
    print(f"\nREADME's rules for every subset of R of the {runs} runs as main (verdicts of "
          "gates.retrain): reseeds' gates failed; mains against which a quarter of the tokens "
          "fails explained variance at the final SAE:")
    _print(["R", "mains", "reseed gates failed", "quarter tokens caught"], rows, markdown)


def print_verdicts(results, markdown: bool) -> None:
    """README's regression gates through the plugin."""
    print("\nREADME's regression gates (default max_drop 0.01, z 2; L0 max_change_pct 15):")
    statuses = ("fail", "inconclusive", "pass", "improved", "skip")
    _print(["case", *statuses], [[label, *(str(c.get(s, 0)) for s in statuses)]
                                 for label, c in results], markdown)


def _print(head: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    for r in [head, *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)))


if __name__ == "__main__":
    main()
