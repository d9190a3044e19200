"""Wall time and peak memory of each eval of a suite.

    python benchmarks/suite_timing.py          # saebench-reference + the good checkpoint
    python benchmarks/suite_timing.py --tiny   # a tiny model + SAE built on the fly
    python benchmarks/suite_timing.py --sae-path CKPT [--model NAME] [--dataset PATH] [--suite fast]

Prints one line per checkpoint and eval; the first checkpoint pays for SAE-independent work
(LLM-side probing activations), later ones show the per-SAE cost. Numbers are for this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build_tiny(root: Path) -> Path:
    from pytest_saebench import testing as T
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    corpus = T.make_corpus(3000)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in corpus))
    model = T.build_tiny_model(root / "model", corpus, steps=200, n_ctx=128)
    ds = load_text_dataset(str(root / "corpus.jsonl"))
    tokens = token_windows(model.tokenizer, ds, 256, 128, True, 0)
    acts = T.collect_activations(model, tokens, "blocks.0.hook_resid_post", 0)
    meta = {"model_name": str(root / "model"), "hook_name": "blocks.0.hook_resid_post",
            "context_size": 128, "dataset_path": str(root / "corpus.jsonl")}
    sae = T.make_sae(model.cfg.d_model, 512, "topk", k=16, metadata=meta)
    T.train_sae(sae, acts, steps=300)
    sae.save_model(root / "sae")
    return root / "sae"


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae-path", action="append")
    parser.add_argument("--tiny", action="store_true", help="build a tiny model and SAE")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--suite", default="fast")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import eval_configs

    tmp = tempfile.TemporaryDirectory()
    started = time.perf_counter()
    if args.tiny:
        paths = [str(_build_tiny(Path(tmp.name)))]
        print(f"setup: built tiny model + SAE in {time.perf_counter() - started:.1f} s")
    else:
        paths = args.sae_path or [str(Path(__file__).parents[1] / "example_tests" /
                                      "checkpoints" / "good")]
    settings = Settings(sae_paths=tuple(paths), suite=args.suite, model=args.model,
                        dataset=args.dataset, device="cpu", results_json=None)
    configs = eval_configs(args.suite)
    runner = Runner(settings, discover_all(paths), configs, metric_registry())
    print(f"suite {args.suite}, {os.cpu_count()} CPUs, torch threads "
          f"{__import__('torch').get_num_threads()}")
    for sae_id in runner.checkpoints:
        t0 = time.perf_counter()
        runner.loaded_sae(sae_id)
        runner.model_for(sae_id)
        print(f"{sae_id}: load model + SAE {time.perf_counter() - t0:.2f} s")
        total = 0.0
        for name in configs:
            t1 = time.perf_counter()
            res = runner.results(sae_id, [name])
            took = time.perf_counter() - t1
            total += took
            print(f"  {name}: {took:.2f} s, peak RSS {_peak_rss_mib():.0f} MiB")
        print(f"  all evals: {total:.2f} s")
        for metric in ("core.sparsity.l0", "core.reconstruction_quality.explained_variance",
                       "core.model_performance_preservation.ce_loss_score",
                       "sparse_probing.sae.sae_top_1_test_accuracy"):
            if res.computed(metric):
                print(f"  {metric} = {res.value(metric):.4f}")


if __name__ == "__main__":
    main()
