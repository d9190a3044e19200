"""Each default-gated metric against a random SAE of the checkpoint's shape (null.py), and what
the null reference costs.

    python benchmarks/null_reference.py                  # the ladder and good, fast suite
    python benchmarks/null_reference.py --smollm2        # SmolLM2's example SAE
    python benchmarks/null_reference.py --core-only      # core alone (quicker)

For every checkpoint it prints, per metric the example's pyproject gates, the value, the
random SAE's value, their paired difference with its standard error and z (STATISTICS.md
§2), and whether a threshold on it carries signal at this budget (gates.null.signal). Then
the null's cost: evaluated the first time (a fresh cache) and read back from the cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
CKPTS = ROOT / "example_tests" / "checkpoints"
LADDER = [f"ladder/step_{s:04d}" for s in (0, 25, 200, 1000, 6000)] + ["good"]
METRICS = ("core.reconstruction_quality.explained_variance",
           "core.model_performance_preservation.ce_loss_score",
           "core.model_behavior_preservation.kl_div_score",
           "core.misc_metrics.frac_dead",
           "tpp.tpp_metrics.tpp_threshold_20_total_metric",
           "absorption_first_letter.mean.mean_absorption_fraction_score",
           "sparse_probing.sae.sae_top_1_test_accuracy")
EVALS = ("core", "tpp", "absorption", "sparse_probing")


def runner_for(path: Path, evals: tuple[str, ...], cache: str):
    """A Runner over ``path`` with the fast presets of ``evals``, caching in ``cache``."""
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import eval_configs

    configs = {k: v for k, v in eval_configs("fast").items() if k in evals}
    settings = Settings(sae_paths=(str(path),), device="cpu", results_json=None,
                        cache_dir=cache, select_evals=evals)
    return Runner(settings, discover_all([str(path)]), configs, metric_registry())


def measure(name: str, evals: tuple[str, ...], cache: str) -> tuple[list[tuple], float]:
    """Rows ``(metric, value, null, gain, se, z, signal)`` and the seconds the null took."""
    from pytest_saebench.gates.null import gain, signal

    runner = runner_for(CKPTS / name, evals, cache)
    sae_id = next(iter(runner.checkpoints))
    res = runner.results(sae_id)
    rows, took = [], 0.0
    for metric in METRICS:
        if not res.computed(metric):
            continue
        spec = runner.registry.get(metric)
        started = time.perf_counter()
        null = runner.null_results(sae_id, metric)
        took += time.perf_counter() - started
        found = gain(metric, spec.direction if spec else "up", res, null)
        if isinstance(found, str):
            rows.append((metric, res.value(metric), None, None, None, None, found))
            continue
        ok, _ = signal(found)
        word = "no se" if found.z is None else ("signal" if ok else "no signal")
        rows.append((metric, found.value, found.null, found.gain, found.stderr, found.z, word))
    return rows, took


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true")
    parser.add_argument("--core-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = ["smollm2/L6_topk"] if args.smollm2 else LADDER
    evals = ("core",) if args.core_only else EVALS
    cache = tempfile.mkdtemp(prefix="saebench-null-bench-")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"fast presets of {', '.join(evals)}, seed 42")
    print("| checkpoint | metric | value | random | gain (paired) | z | |")
    print("|---|---|---|---|---|---|---|")
    costs = []
    for name in names:
        rows, took = measure(name, evals, cache)
        costs.append((name, took))
        for metric, value, null, g, se, z, word in rows:
            print(f"| {name} | `{metric.split('.', 1)[0]}.{metric.rsplit('.', 1)[-1]}` | "
                  f"{_f(value)} | {_f(null)} | {_f(g)} ± {_f(se)} | {_f(z)} | {word} |")
    # every checkpoint here has the same shape: the first pays, the others read the cache
    later = ", ".join(f"{t:.2f} s" for _, t in costs[1:])
    print(f"\nnull reference: first {costs[0][1]:.1f} s (evaluated)"
          + (f", then {later} (read from the cache)" if later else ""))
    _, took = measure(names[0], evals, cache)
    print(f"a later run, {names[0]}: {took:.2f} s (cached)")


if __name__ == "__main__":
    main()
