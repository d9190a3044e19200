"""Where a warm checkpoint's core time to the verdict goes, at the adaptive budget's first
look: SmolLM2-135M's example SAE, the thresholds of ``benchmarks/smollm2_thresholds.toml``
(every gate decided at look 1), in-memory tensor cache.

    python benchmarks/look_profile.py [--pyproject benchmarks/smollm2_thresholds.toml]

Evaluates one copy of the SAE cold (not profiled), then a second copy warm under cProfile,
and prints the warm run's wall time by phase (the functions named in ``PHASES``, inclusive
time) and the functions with the most time of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from vs_saebench import core_thresholds, make_runner, stopped_at

ROOT = Path(__file__).parents[1]
SAE = ROOT / "example_tests" / "checkpoints" / "smollm2" / "L6_topk"
# (file suffix, function) -> phase; inclusive times, so an inner phase is listed apart
PHASES = {
    ("activations.py", "logits_with_replacement"): "spliced forward (hook layer on)",
    ("core.py", "_encode_chunked"): "SAE encode + decode",
    ("core.py", "_variance_phase"): "variance phase (incl. encode)",
    ("core.py", "_loss_phase"): "loss phase (incl. spliced forward)",
    ("core_units.py", "record"): "per-unit records",
    ("core_units.py", "record_loss"): "loss metrics + jackknife",
    ("core_units.py", "record_variance"): "variance metrics + jackknife",
    ("core.py", "_weight_stats"): "weight statistics",
    ("core.py", "_details"): "per-latent details",
    ("adaptive.py", "stop"): "stopping rule",
    ("runner.py", "loaded_sae"): "loading the SAE",
}


def main() -> None:
    """Profile a warm checkpoint's core at the first look and print the phases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path,
                        default=ROOT / "benchmarks" / "smollm2_thresholds.toml")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="look-profile-"))
    paths = [tmp / f"step{i}" for i in range(2)]
    for p in paths:
        shutil.copytree(SAE, p)
    runner = make_runner(paths, "smollm2-135m", ["core"], "adaptive",
                         core_thresholds(args.pyproject))
    cold, warm = list(runner.checkpoints)
    runner.model_for(cold)
    t0 = time.perf_counter()
    runner.results(cold, ["core"])
    print(f"cold checkpoint: {time.perf_counter() - t0:.2f} s")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = runner.results(warm, ["core"])
    prof.disable()
    total = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"warm checkpoint: {total:.2f} s under cProfile, stopped at {stopped_at(res)}")
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    for (suffix, func), phase in PHASES.items():
        cum = sum(v[3] for (f, _, fn), v in raw.items() if f.endswith(suffix) and fn == func)
        print(f"  {phase:<40} {cum:6.2f} s  {cum / total:5.1%}")
    print(f"\nmost time of their own (top {args.top}):")
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:args.top]
    for (f, line, fn), v in rows:
        print(f"  {v[2]:6.2f} s  {v[1]:>6} calls  {Path(f).name}:{line} {fn}")


if __name__ == "__main__":
    main()
