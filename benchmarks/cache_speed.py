"""Cold and warm tensor cache, the per-SAE cost against its floor, and scaling.

    python benchmarks/cache_speed.py            # all figures (a few minutes on 2 cores)
    python benchmarks/cache_speed.py --quick    # cold/warm only

Figures, on the reference model and the `good` example checkpoint:
1. the fast suite in a fresh process with a cold cache, then with a warm one: wall time and
   peak RSS of each process;
2. per-SAE core time (warm) against one spliced forward (``start_at_layer``) over the same
   loss-phase tokens, and against the floor: that forward plus SAE encode/decode of every token;
3. per-SAE core time as the token budget doubles, and as d_sae grows from 2k to 16k.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
GOOD = ROOT / "example_tests" / "checkpoints" / "good"


def _one_run(cache_dir: str, suite: str) -> None:
    """Child process: run the suite once on `good`; print wall time and peak RSS as JSON."""
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import eval_configs

    started = time.perf_counter()
    settings = Settings(sae_paths=(str(GOOD),), suite=suite, device="cpu", results_json=None,
                        cache_dir=cache_dir)
    runner = Runner(settings, discover_all([str(GOOD)]), eval_configs(suite), metric_registry())
    sae_id = next(iter(runner.checkpoints))
    runner.loaded_sae(sae_id)
    runner.model_for(sae_id)
    evals = {"imports and loading": time.perf_counter() - started}
    for name in runner.configs_for(suite):
        t0 = time.perf_counter()
        res = runner.results(sae_id, [name])
        evals[name] = time.perf_counter() - t0
    print(json.dumps({"seconds": time.perf_counter() - started, "evals": evals,
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "stats": runner.tensor_cache().stats,
                      "ev": res.value("core.reconstruction_quality.explained_variance")}))


def cold_and_warm(suite: str) -> None:
    """Figure 1."""
    with tempfile.TemporaryDirectory() as cache:
        runs = {}
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, __file__, "--child", cache, "--suite", suite],
                                 check=True, capture_output=True, text=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
            r = runs[label]
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in r["evals"].items())
            print(f"{suite} suite, {label} cache: {r['seconds']:.1f} s in the process ({parts}),"
                  f" peak RSS {r['rss_mib']:.0f} MiB, cache {r['stats']}")
        size = sum(p.stat().st_size for p in Path(cache).iterdir()) / 2**20
        print(f"cache on disk: {size:.0f} MiB; identical results: "
              f"{runs['cold']['ev'] == runs['warm']['ev']}")


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def floor_and_scaling() -> None:
    """Figures 2 and 3 (in process, warm in-memory cache)."""
    import torch

    from pytest_saebench import testing as T
    from pytest_saebench.activations import logits_with_replacement
    from pytest_saebench.evals.core import PRESETS
    from tests.helpers import make_runner

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = PRESETS["fast"]
    runner = make_runner(GOOD, cfg=cfg)
    sae_id = next(iter(runner.checkpoints))
    runner.results(sae_id)  # fills the cache

    def core_again() -> None:
        runner.discard_results()
        runner.results(sae_id)

    per_sae = _timed(core_again)
    loaded, model = runner.loaded_sae(sae_id), runner.model_for(sae_id)
    side = runner.tensor_cache().entries("core-loss")[0]
    var = runner.tensor_cache().entries("core-var")[0]
    bsz = cfg.batch_size_prompts

    @torch.inference_mode()
    def spliced(sides=(side,)) -> None:
        for s in sides:
            for i in range(0, s["tokens"].shape[0], bsz):
                logits_with_replacement(model, s["tokens"][i:i + bsz], loaded.hook,
                                        s["act"][i:i + bsz]).float().log_softmax(-1)

    @torch.inference_mode()
    def encode_decode() -> None:
        for acts in (side["act"], var["act"]):
            for i in range(0, acts.shape[0], bsz):
                loaded.sae.decode(loaded.sae.encode(acts[i:i + bsz]))

    t_all, t_fwd = _timed(lambda: spliced((side, var))), _timed(spliced)
    t_sae = _timed(encode_decode)
    n_loss, n_var = side["tokens"].numel(), var["tokens"].numel()
    print(f"per-SAE core (warm, {n_loss} loss + {n_var} variance tokens): {per_sae:.2f} s")
    print(f"  one spliced forward over the same {n_loss + n_var} tokens: {t_all:.2f} s "
          f"(ratio {per_sae / t_all:.2f}x)")
    print(f"  floor = spliced forward over the loss tokens {t_fwd:.2f} s + SAE encode/decode "
          f"of all tokens {t_sae:.2f} s = {t_fwd + t_sae:.2f} s (ratio "
          f"{per_sae / (t_fwd + t_sae):.2f}x)")

    for factor in (1, 2, 4):
        c = dataclasses.replace(cfg, n_eval_reconstruction_batches=8 * factor,
                                n_eval_sparsity_variance_batches=32 * factor)
        r = make_runner(GOOD, cfg=c)
        sid = next(iter(r.checkpoints))
        r.results(sid)
        t = _timed(lambda r=r, sid=sid: (r.discard_results(), r.results(sid)), repeat=1)
        print(f"token budget x{factor} ({(8 + 32) * factor * cfg.batch_size_prompts} contexts):"
              f" per-SAE core {t:.2f} s")
    meta = {**json.loads((GOOD / "cfg.json").read_text())["metadata"]}
    with tempfile.TemporaryDirectory() as tmp:
        for d_sae in (2048, 4096, 8192, 16384):
            path = Path(tmp) / f"d{d_sae}"
            T.make_sae(128, d_sae, "topk", k=32, metadata=meta, seed=0).save_model(path)
            r = make_runner(path, cfg=dataclasses.replace(
                cfg, compute_featurewise_weight_based_metrics=False))
            sid = next(iter(r.checkpoints))
            r.results(sid)
            t = _timed(lambda r=r, sid=sid: (r.discard_results(), r.results(sid)), repeat=1)
            print(f"d_sae {d_sae}: per-SAE core {t:.2f} s")


def main() -> None:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="CACHE_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--suite", default="fast")
    parser.add_argument("--quick", action="store_true", help="cold and warm runs only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    if args.child:
        _one_run(args.child, args.suite)
        return
    cold_and_warm(args.suite)
    if not args.quick:
        floor_and_scaling()


if __name__ == "__main__":
    main()
