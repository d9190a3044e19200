"""How often a retrain that changed nothing fails, through the plugin's own verdict.

    python benchmarks/retrain_calibration.py [--draws 20000] [--markdown]

Synthetic replicate runs in the random-effects model a retrain is judged by (STATISTICS.md
§6): each run's value is a run effect (sd ``ratio``) plus evaluation noise (sd 1, its variance
estimated with 19 degrees of freedom, as core's 20 groups give). A pull request of one run
against R runs on main, rule ``{ max_drop = 0, z }``, decided by
``gates.retrain.check_retrain``; beside it the same standard error with Satterthwaite's
degrees of freedom (which STATISTICS.md names) instead of the between-run estimate's R - 1.
Nominal: the one-sided tail of ``z`` (a drop), 0.0228 at z = 2, 0.00135 at z = 3.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))


def draw(rng: random.Random, ratio: float) -> tuple[float, float]:
    """One run's value and its evaluation standard error."""
    se = math.sqrt(rng.gammavariate(19 / 2, 2 / 19))
    return rng.gauss(0, ratio) + rng.gauss(0, 1.0), se


def rates(draws: int, runs: int, ratio: float, z: float, seed: int = 0) -> tuple[float, float]:
    """``(the plugin's false-fail rate, with Satterthwaite's degrees of freedom)``."""
    from pytest_saebench.gates.regression import RegressionRule
    from pytest_saebench.gates.retrain import Replicate, check_retrain, retrain_difference
    from pytest_saebench.gates.stats import critical

    class Res:
        def __init__(self, v, s):
            self.v, self.s = v, s
            self.evals = {"core": type("E", (), {"config": {}, "unstructured": {}})()}

        def value(self, m):
            return self.v

        def stderr(self, m):
            return self.s

        def dof(self, m):
            return 19

    rng = random.Random(seed)
    rule = RegressionRule("core.x", max_drop=0.0, z=z)
    ours = satt = 0
    for _ in range(draws):
        main = [Replicate(*draw(rng, ratio), 19) for _ in range(runs)]
        new = draw(rng, ratio)
        out, _ = check_retrain(rule, "up", [Res(*new)], main, Res(*new), "main", "")
        ours += out.status == "fail"
        diff = retrain_difference([Replicate(*new, 19)], main)
        satt += -diff.delta - critical(z, _satterthwaite(main, new)) * diff.stderr > 0
    return ours / draws, satt / draws


def _satterthwaite(main, new) -> int:
    """Satterthwaite's degrees of freedom for se² = σ²_run (1/R + 1) + v/R + v', σ²_run the
    clipped moment estimate: its components' own degrees of freedom."""
    r = len(main)
    ys = [m.value for m in main]
    mean = sum(ys) / r
    s2 = sum((y - mean) ** 2 for y in ys) / (r - 1)
    v_all = sum(x.stderr ** 2 for x in main + [type(main[0])(*new, 19)]) / (r + 1)
    v_main = sum(m.stderr ** 2 for m in main) / r
    v_new = new[1] ** 2
    sigma2 = max(0.0, s2 - v_all)
    parts = [(v_main / r, 19 * r), (v_new, 19)]
    if sigma2 > 0:
        parts.append((sigma2 * (1 / r + 1), r - 1))
    total = sum(p for p, _ in parts)
    return max(1, math.floor(total ** 2 / sum(p * p / df for p, df in parts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    from pytest_saebench.gates.stats import two_sided_alpha

    head = ["z", "R on main", "sd between runs / eval se", "nominal", "plugin (df R - 1)",
            "Satterthwaite df"]
    rows = []
    for z in (2.0, 3.0):
        for runs in (2, 3, 5):
            for ratio in (0.0, 1.0, 5.0):
                ours, satt = rates(args.draws, runs, ratio, z)
                rows.append([f"{z:g}", str(runs), f"{ratio:g}",
                             f"{two_sided_alpha(z) / 2:.4f}", f"{ours:.4f}", f"{satt:.4f}"])
    print(f"false-fail rate of a retrain that changed nothing, {args.draws} draws per row:")
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
        for r in [head, *rows]:
            print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)))


if __name__ == "__main__":
    main()
