"""Every gate form's false-fail rate under no change, through the plugin's own decision
functions, beside the nominal rate and a deliberately broken boundary.

    python benchmarks/gate_calibration.py [--draws 40000] [--markdown]

The simulations are tests/calibration.py's (tables of 64 groups in core's recorded form; the
same ones tests/test_calibration.py asserts); the nominal rate is the one-sided tail of ``z``
(a fail is one side of the interval), 0 for the very checkpoint against itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=40_000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    from tests import calibration as C

    n = args.draws
    rows = []

    def row(form: str, z: float, draws: int, ours: float, broken: str, rate: float | None,
            nominal: float | None = None) -> None:
        nom = C.nominal(z) if nominal is None else nominal
        rows.append([form, f"{z:g}" if z else "-", f"{draws:,}", f"{nom:.5f}", f"{ours:.5f}",
                     broken, "" if rate is None else f"{rate:.5f}"])

    started = time.perf_counter()
    few = C.FIRST_LOOK  # the groups of a first look, where t and the normal differ
    row(f"threshold, fixed budget, {C.GROUPS} groups", 2, n, C.threshold_fixed(n, 2.0),
        "the normal quantile", C.threshold_fixed(n, 2.0, normal=True))
    row(f"threshold, {few} groups", 2, n, C.threshold_fixed(n, 2.0, groups=few),
        "the normal quantile", C.threshold_fixed(n, 2.0, normal=True, groups=few))
    row(f"threshold, adaptive ({len(C.FRACTIONS)} looks)", 2, n, C.threshold_adaptive(n, 2.0),
        "no spending", C.threshold_adaptive(n, 2.0, spend=False))
    row("regression rule, paired", 2, n, C.paired_rule(n, 2.0), "", None)
    big = 2 * n + n // 2
    row(f"regression rule, unpaired, {few} groups", 3, big,
        C.unpaired_rule(big, 3.0, groups=few), "the normal quantile",
        C.unpaired_rule(big, 3.0, normal=True, groups=few))
    for reps in (3, 5):
        row(f"threshold, repeats {reps}", 3, n, C.repeats_threshold(n, 3.0, reps),
            "the normal quantile", C.repeats_threshold(n, 3.0, reps, normal=True))
    fails, below = C.identical_checkpoint_adaptive(400)
    old_fails, _ = C.identical_checkpoint_adaptive(400, over_windows=False)
    _, old_below = C.identical_checkpoint_adaptive(400, shared_mean=False)
    row("z-less rule, the very SAE, adaptive run", 0, 400, fails, "values over other windows",
        old_fails, 0.0)
    row("  its explained variance's Δ < 0 at look 1", 0, 400, below, "own-mean sums of squares",
        old_below, 0.0)
    row("metric without a standard error, adaptive", 0, 2000, C.no_stderr_adaptive(2000),
        "decided at the first look", C.no_stderr_adaptive(2000, monotone=False), 0.0)
    head = ["gate form", "z", "draws", "nominal", "plugin", "broken boundary", "its rate"]
    _table(head, rows, args.markdown)
    print("\nStopping for futility (a z = 3 threshold under an adaptive budget, its true value"
          " some whole-budget standard errors inside its bound):\n")
    rows = []
    for inside in (0.0, 2.0, 4.5, -4.5):
        for name, level in (("off", 0.0), (f"{C.budget.FUTILITY:g}", C.budget.FUTILITY),
                            ("1 (broken: always)", 1.0)):
            r = C.futility_run(n // 2, 3.0, inside, level=level)
            rows.append([f"{inside:+g}", name, f"{n // 2:,}", f"{r['fail']:.4f}",
                         f"{r['pass']:.4f}", f"{r['inconclusive']:.4f}",
                         f"{r['futile']:.4f}", f"{r['used']:.3f}"])
    _table(["inside (se)", "futility level", "draws", "fail", "pass", "inconclusive",
            "stopped for futility", "budget used"], rows, args.markdown)
    print(f"\n{time.perf_counter() - started:.0f} s")


def _table(head: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
        for r in [head, *rows]:
            print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)))


if __name__ == "__main__":
    main()
