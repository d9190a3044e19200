"""The first checkpoint of a CI run whose tensor cache was restored from an earlier run, on
SmolLM2-135M, whose clean log-probabilities (1.6 GB at `fast`) are too large for the disk
cache: core's seconds with the cached last-block output they are rebuilt from (the final norm
and unembedding), and without it (the clean forward from the hook layer on, as before).

    python benchmarks/restored_cache.py

Each figure is a fresh process on one disk cache (the model load is not timed): the cold run
that fills it, then the restored runs. The numbers of all three must be identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
SAE = ROOT / "example_tests" / "checkpoints" / "smollm2" / "L6_topk"


def _child(cache_dir: str, without_final: bool) -> None:
    """One process: core at `fast` (fixed budget) on the SAE; prints seconds and metrics."""
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import core, core_side, metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner

    if without_final:  # what a cache entry written before the final residual was kept holds
        extend = core_side.Side.extend

        def dropped(self, upto):
            out = extend(self, upto)
            out.pop("resid_final", None)
            return out

        core_side.Side.extend = dropped
    settings = Settings(sae_paths=(str(SAE),), device="cpu", results_json=None,
                        cache_dir=cache_dir, null_reference="off")
    runner = Runner(settings, discover_all([str(SAE)]), {"core": core.PRESETS["fast"]},
                    metric_registry())
    sae_id = next(iter(runner.checkpoints))
    runner.model_for(sae_id)
    started = time.perf_counter()
    metrics = runner.results(sae_id).evals["core"].metrics
    print(json.dumps({"seconds": time.perf_counter() - started, "metrics": metrics}))


def main() -> None:
    """Run the three processes and print their figures."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as cache:
        runs = {}
        for label, without in (("cold (fills the cache)", False),
                               ("restored, last-block output kept", False),
                               ("restored, without it (before)", True)):
            out = subprocess.run([sys.executable, __file__, "--child", cache, str(without)],
                                 env=env, capture_output=True, text=True, check=True)
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in Path(cache).glob("*.safetensors"))
    def text(run: dict) -> str:  # NaN equals NaN here
        return json.dumps(run["metrics"], sort_keys=True)

    first = text(next(iter(runs.values())))
    for label, run in runs.items():
        same = "identical" if text(run) == first else "DIFFERENT"
        print(f"{label:<36} core {run['seconds']:6.1f} s  numbers {same}")
    print(f"disk cache: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3] == "True")
    else:
        main()
