"""Per-checkpoint cost of each eval against its floor, sweep cost, memory and disk reads.

    python benchmarks/floor.py                    # reference model, fast suite
    python benchmarks/floor.py --suite standard   # (the first run builds sae-probes' activations)
    python benchmarks/floor.py --smollm2          # SmolLM2-135M and its L6_topk, when installed
    python benchmarks/floor.py --sweep 1 4 16     # suite cost per checkpoint of an N-SAE sweep
    python benchmarks/floor.py --d-sae 16384      # time and peak RSS with a 16k-latent SAE
    python benchmarks/floor.py --disk             # where a warm-from-disk core run's time goes
    python benchmarks/floor.py --batched-encode   # N SAEs encoded in one matmul vs one by one

Measured: the eval's wall time for a later checkpoint, the SAE-independent side (LLM
activations, LLM probes) already in memory. Floor: the time spent inside the operations that
depend on the SAE and that the method cannot skip, timed by wrapping them during that same
run (same process, same tensors, nested calls counted once):

- SAE ``encode`` / ``decode`` (every call the eval makes; probing encodes only real tokens);
- the spliced forward from the hook layer (``logits_with_replacement``, core's loss tokens);
- probe fits and their scoring (``probing.train_probe``, every sklearn ``LogisticRegression``
  ``fit`` / ``predict`` / ``score``: top-k probes, absorption's k-sparse probes, sae-probes'
  regularisation search), absorption's L1 multi-probe training;
- probing evals' ablation of pooled codes and re-scoring of the clean probes (TPP, SCR),
  absorption's per-word scores;
- the meta-SAE's training steps (``SAETrainer._train_step``);
- properties: the SAE calls of each check on the examples hypothesis generates.

Anything else (pooling, gathering, sklearn's input validation, bookkeeping) is overhead.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).parents[1]
CHECKPOINTS = ROOT / "example_tests" / "checkpoints"


class Primitives:
    """Wraps the floor's operations with timers; a call inside another is counted once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = 0

    def wrap(self, label: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self._depth -= 1
        return timed

    @contextmanager
    def patched(self, sae):
        """Every floor operation timed while the block runs (``sae``: the checkpoint's)."""
        from sae_lens.training.sae_trainer import SAETrainer
        from sklearn.linear_model import LogisticRegression

        from pytest_saebench.evals import absorption, core, probing, properties

        targets = [(sae, "encode", "SAE encode/decode"), (sae, "decode", "SAE encode/decode"),
                   (core, "logits_with_replacement", "spliced forward"),
                   (probing, "train_probe", "probe fits"),
                   (LogisticRegression, "fit", "probe fits"),
                   (LogisticRegression, "predict", "probe fits"),
                   (LogisticRegression, "score", "probe fits"),
                   (absorption, "train_multiprobe", "probe fits"),
                   (probing, "accuracy", "ablation + scoring"),
                   (probing, "ablated", "ablation + scoring"),
                   (absorption, "absorption_of", "ablation + scoring"),
                   (SAETrainer, "_train_step", "meta-SAE steps")]
        saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in targets]
        for obj, name, label in targets:
            setattr(obj, name, self.wrap(label, getattr(obj, name)))
        search = properties.search
        properties.search = lambda check, strategy, cfg: search(
            self.wrap("property checks", check), strategy, cfg)
        try:
            yield self
        finally:
            properties.search = search
            for obj, name, original in saved:
                if original is None:
                    delattr(obj, name)  # an instance attribute shadowing the class's method
                else:
                    setattr(obj, name, original)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _runner(paths: list[str], suite: str, model: str = "auto", cache_dir: str | None = None):
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import eval_configs

    settings = Settings(sae_paths=tuple(paths), suite=suite, model=model, device="cpu",
                        results_json=None, cache_dir=cache_dir)
    return Runner(settings, discover_all(paths), eval_configs(suite), metric_registry())


def floor_table(paths: list[str], suite: str, model: str, label: str,
                cache_dir: str | None = None) -> None:
    """Warm the SAE-independent side on ``paths[0]``, then time every eval of ``suite`` on
    ``paths[1]`` against its floor."""
    runner = _runner(paths, suite, model, cache_dir)
    first, later = list(runner.checkpoints)[:2]
    for name in runner.configs_for(suite):
        runner.results(first, [name])
    print(f"\n{label}, suite {suite}, checkpoint '{later}' (SAE-independent side warm):")
    print("| eval | measured | floor | measured / floor | floor made of |")
    print("|---|---|---|---|---|")
    from pytest_saebench.evals import get_eval

    sae = runner.loaded_sae(later).sae
    total = total_floor = 0.0
    for name in runner.configs_for(suite):
        prims = Primitives()
        with prims.patched(sae):
            started = time.perf_counter()
            res = runner.results(later, [name]).evals[get_eval(name).EVAL_TYPE_ID]
            took = time.perf_counter() - started
        floor = sum(prims.seconds.values())
        total, total_floor = total + took, total_floor + floor
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(prims.seconds.items()))
        ran = sum(v is not None for v in res.metrics.values())
        note = parts or f"nothing ({ran} metrics computed)"
        ratio = f"{took / floor:.2f}x" if floor > 0.01 else "-"
        print(f"| {name} | {took:.2f} s | {floor:.2f} s | {ratio} | {note} |")
    print(f"| all | {total:.2f} s | {total_floor:.2f} s | {total / total_floor:.2f}x | |")
    print(f"peak RSS {_peak_rss_gib():.2f} GiB")


def _random_like(good: Path, out: Path, d_sae: int, seed: int) -> str:
    import json

    from pytest_saebench import testing as T

    cfg = json.loads((good / "cfg.json").read_text())
    T.make_sae(cfg["d_in"], d_sae, "topk", k=cfg.get("k", 32), metadata=cfg["metadata"],
               seed=seed).save_model(out)
    return str(out)


def sweep_cost(ns: list[int], suite: str) -> None:
    """Suite time per checkpoint for sweeps of N same-shape SAEs, cold in-memory cache (the
    first checkpoint pays the SAE-independent side)."""
    good = CHECKPOINTS / "good"
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            paths = [str(good)] + [_random_like(good, Path(tmp) / f"n{n}-{i}", 1024, i)
                                   for i in range(1, n)]
            runner = _runner(paths, suite)
            started = time.perf_counter()
            for sae_id in runner.checkpoints:
                runner.results(sae_id)
            took = time.perf_counter() - started
            print(f"sweep of {n}: {took:.1f} s, {took / n:.1f} s per checkpoint")


def big_sae(d_sae: int, suite: str) -> None:
    """Per-eval time and peak RSS for a ``d_sae``-latent TopK SAE after ``good``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _random_like(CHECKPOINTS / "good", Path(tmp) / f"d{d_sae}", d_sae, 0)
        floor_table([str(CHECKPOINTS / "good"), path], suite, "auto",
                    f"reference model, TopK SAE with {d_sae} latents")


def disk_reads() -> None:
    """Core on a later checkpoint with its cache entries in memory vs read from disk, and the
    parts of a read."""
    import hashlib

    from safetensors.torch import load

    good, other = str(CHECKPOINTS / "good"), str(CHECKPOINTS / "undertrained")
    with tempfile.TemporaryDirectory() as cache:
        warm = _runner([good, other], "fast", cache_dir=cache)
        first, later = list(warm.checkpoints)
        warm.results(first, ["core"])
        started = time.perf_counter()
        warm.results(later, ["core"])
        in_memory = time.perf_counter() - started
        fresh = _runner([good, other], "fast", cache_dir=cache)
        fresh.loaded_sae(later)
        fresh.model_for(later)
        started = time.perf_counter()
        fresh.results(later, ["core"])
        from_disk = time.perf_counter() - started
        print(f"core, later checkpoint: entries in memory {in_memory:.2f} s, "
              f"read from disk {from_disk:.2f} s")
        read = sha = parse = size = 0.0
        for path in Path(cache).glob("core-*.safetensors"):
            t0 = time.perf_counter()
            blob = path.read_bytes()
            t1 = time.perf_counter()
            hashlib.sha256(blob).hexdigest()
            t2 = time.perf_counter()
            load(blob)
            t3 = time.perf_counter()
            read, sha, parse = read + t1 - t0, sha + t2 - t1, parse + t3 - t2
            size += len(blob) / 2**20
        print(f"  core entries {size:.0f} MiB: read {read:.2f} s, SHA-256 {sha:.2f} s, "
              f"deserialize {parse:.2f} s")


def batched_encode(ns: list[int]) -> None:
    """TopK encode of N SAEs (1,024 latents, d_in 128) over the same 65,536 activations: one
    by one against one concatenated matmul."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(65536, 128)
    for n in ns:
        w, b = torch.randn(n, 128, 1024), torch.randn(n, 1024)
        wc, bc = w.permute(1, 0, 2).reshape(128, -1), b.reshape(-1)

        def topk(pre):
            v, ix = pre.relu().topk(32, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, ix, v)

        t0 = time.perf_counter()
        for i in range(n):
            for j in range(0, x.shape[0], 8192):
                topk(x[j:j + 8192] @ w[i] + b[i])
        t1 = time.perf_counter()
        for j in range(0, x.shape[0], 8192):
            topk((x[j:j + 8192] @ wc + bc).view(-1, n, 1024))
        t2 = time.perf_counter()
        print(f"N={n}: one by one {(t1 - t0) / n:.3f} s per SAE, batched "
              f"{(t2 - t1) / n:.3f} s per SAE")


def main() -> None:
    """Parse arguments and print the figures asked for (default: the floor table)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="fast", choices=("fast", "standard", "full"))
    parser.add_argument("--smollm2", action="store_true")
    parser.add_argument("--sweep", type=int, nargs="+", metavar="N")
    parser.add_argument("--d-sae", type=int)
    parser.add_argument("--disk", action="store_true")
    parser.add_argument("--batched-encode", action="store_true")
    parser.add_argument("--cache-dir", help="tensor cache to reuse between runs (standard: "
                        "sae-probes' activations take minutes to build)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    special = args.sweep or args.d_sae or args.disk or args.batched_encode
    if not special:
        floor_table([str(CHECKPOINTS / "good"), str(CHECKPOINTS / "undertrained")],
                    args.suite, "auto", "reference model", args.cache_dir)
    if args.smollm2:
        l6 = CHECKPOINTS / "smollm2" / "L6_topk"
        with tempfile.TemporaryDirectory() as tmp:
            random = _random_like(l6, Path(tmp) / "random", 2304, 7)
            floor_table([random, str(l6)], args.suite, "auto", "SmolLM2-135M, L6_topk",
                        args.cache_dir)
    if args.sweep:
        sweep_cost(args.sweep, args.suite)
    if args.d_sae:
        big_sae(args.d_sae, args.suite)
    if args.disk:
        disk_reads()
    if args.batched_encode:
        batched_encode([1, 4, 16])


if __name__ == "__main__":
    main()
