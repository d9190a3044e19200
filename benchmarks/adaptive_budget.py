"""Verdicts, tokens and seconds with budget = "adaptive" against "fixed" (STATISTICS.md §4).

    python benchmarks/adaptive_budget.py              # every shipped example checkpoint
    python benchmarks/adaptive_budget.py --markdown   # the table as docs/statistics.md has it

Each checkpoint is gated on core (the eval that evaluates in looks) with the example's
thresholds (example_tests/pyproject.toml) at `fast`, once with each budget, in a pytest run as
a user's CI makes it (a subprocess, the same warm tensor cache for both). It prints each run's
gate verdicts, the SAE-dependent tokens core read (the windows its SAE was run on: loss and
reconstruction phases) and core's seconds, and whether the verdicts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
CHECKPOINTS = ROOT / "example_tests" / "checkpoints"
SHIPPED = ["good", "undertrained", "dense", "sweep/k8", "sweep/k16", "sweep/k64",
           "ladder/step_0000", "ladder/step_0025", "ladder/step_0200", "ladder/step_1000",
           "ladder/step_6000"]


def gate(checkpoint: Path, budget: str, work: Path, cache: Path) -> dict:
    """One pytest run: the core gates' verdicts, tokens and seconds."""
    out = work / f"{checkpoint.name}-{budget}.json"
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "example_tests" /
                    "pyproject.toml"), f"--sae-path={checkpoint}", "--saebench-evals=core",
                    f"--saebench-budget={budget}", f"--saebench-json={out}",
                    f"--saebench-cache-dir={cache}", "-p", "no:cacheprovider", "-q",
                    "-m", "saebench"],
                   cwd=work, capture_output=True, text=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    data = json.loads(out.read_text())
    (entry,) = data["saes"].values()
    core = entry["evals"]["core"]
    tokens = core["eval_result_metrics"]["token_stats"]
    looks = core["eval_result_unstructured"].get("looks") or {}
    verdicts = {c["metric"].rsplit(".", 1)[1]: c["status"] for c in data["checks"]
                if c["kind"] == "threshold" and c["metric"].startswith("core.")}
    return {"verdicts": verdicts, "seconds": entry["seconds"],
            "tokens": int(tokens["total_tokens_eval_reconstruction"]
                          + tokens["total_tokens_eval_sparsity_variance"]),
            "look": looks.get("stopped_at"), "looks": len(looks.get("fractions", [])) or None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--checkpoints", default=",".join(SHIPPED))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adaptive-budget-"))
    cache = work / "cache"
    names = args.checkpoints.split(",")
    gate(CHECKPOINTS / names[0], "fixed", work, cache)  # warm the SAE-independent cache
    rows = []
    for name in names:
        fixed = gate(CHECKPOINTS / name, "fixed", work, cache)
        adaptive = gate(CHECKPOINTS / name, "adaptive", work, cache)
        same = fixed["verdicts"] == adaptive["verdicts"]
        shown = ", ".join(f"{k} {v}" for k, v in sorted(adaptive["verdicts"].items())
                          if v != "pass") or "all pass"
        rows.append([name, shown, "yes" if same else f"NO (fixed: {fixed['verdicts']})",
                     f"{adaptive['look'] + 1} of {adaptive['looks']}",
                     f"{adaptive['tokens']:,} / {fixed['tokens']:,} "
                     f"({adaptive['tokens'] / fixed['tokens']:.0%})",
                     f"{adaptive['seconds']:.1f} / {fixed['seconds']:.1f}"])
    head = ["checkpoint", "core verdicts (adaptive)", "same as fixed", "stopped at look",
            "SAE tokens adaptive / fixed", "core seconds adaptive / fixed"]
    bar = "|" if args.markdown else ""
    print(f"{bar} " + " | ".join(head) + f" {bar}")
    if args.markdown:
        print("|" + "---|" * len(head))
    for row in rows:
        print(f"{bar} " + " | ".join(row) + f" {bar}")
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs; warm tensor cache; core at `fast`")


if __name__ == "__main__":
    main()
