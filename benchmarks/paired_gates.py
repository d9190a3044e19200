"""How much a paired comparison sees that an unpaired one does not (STATISTICS.md §2).

    python benchmarks/paired_gates.py               # core at `fast` on the reference model
    python benchmarks/paired_gates.py --markdown    # the tables as docs/statistics.md has them

``good`` is evaluated against copies of itself with 2 % and 5 % of its latents switched off
and with noise (10 % of each row's norm) added to ``W_dec``, all on the same windows (same
seed and budget). For each copy and each default-gated core metric with a standard error it
prints the difference and its z as gated before this change (over ``hypot(se_new, se_old)``)
and paired over the context groups both runs evaluated. Then, per metric, the smallest
regression a ``{ max_drop = 0, z = 3 }`` rule detects: the critical value times the standard
error of the difference, paired (measured on ``good`` against the 2 % copy) and unpaired.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
GOOD = ROOT / "example_tests" / "checkpoints" / "good"
METRICS = ("core.model_behavior_preservation.kl_div_score",
           "core.model_performance_preservation.ce_loss_score",
           "core.reconstruction_quality.explained_variance",
           "core.sparsity.l0")


def variant(root: Path, name: str, off: float = 0.0, noise: float = 0.0) -> Path:
    """A copy of ``good``: ``off`` of its latents never selected, or ``noise`` times each
    decoder row's norm added as Gaussian noise."""
    import torch
    from safetensors.torch import load_file, save_file

    out = root / name
    shutil.copytree(GOOD, out)
    weights = load_file(str(out / "sae_weights.safetensors"))
    gen = torch.Generator().manual_seed(0)
    if off:
        idx = torch.randperm(weights["W_enc"].shape[1], generator=gen)
        idx = idx[:max(1, round(off * len(idx)))]
        weights["W_enc"][:, idx] = 0.0
        weights["b_enc"][idx] = -1e4
    if noise:
        w = weights["W_dec"]
        weights["W_dec"] = w + noise * w.norm(dim=1, keepdim=True) * torch.randn(
            w.shape, generator=gen) / math.sqrt(w.shape[1])
    save_file(weights, str(out / "sae_weights.safetensors"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--z", type=float, default=3.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pytest_saebench.evals.core import PRESETS
    from pytest_saebench.gates.regression import pair
    from pytest_saebench.gates.stats import critical
    from tests.helpers import make_runner

    root = Path(tempfile.mkdtemp(prefix="paired-gates-"))
    started, cpu = time.perf_counter(), time.process_time()
    copies = {"2 % latents off": variant(root, "off2", off=0.02),
              "5 % latents off": variant(root, "off5", off=0.05),
              "W_dec + 10 % noise": variant(root, "noise10", noise=0.10)}
    results = {"good": make_runner(GOOD, cfg=PRESETS["fast"]).results("good")}
    for name, path in copies.items():
        results[name] = make_runner(path, cfg=PRESETS["fast"]).results(path.name)
    base = results["good"]
    rows, smallest = [], {}
    for name in copies:
        new = results[name]
        for metric in METRICS:
            if not new.stderr(metric) and not base.stderr(metric):
                continue  # no noise to compare (L0 of a TopK SAE: exactly k)
            paired, _ = pair(metric, new, base)
            delta = new.value(metric) - base.value(metric)
            unpaired = math.hypot(new.stderr(metric), base.stderr(metric))
            z_un = delta / unpaired if unpaired else math.nan
            z_pa = paired.delta / paired.stderr if paired and paired.stderr else math.nan
            rows.append((name, metric.rsplit(".", 1)[1], delta, z_un, z_pa,
                         paired.n_paired if paired else 0))
            if name == "2 % latents off" and paired and paired.stderr:
                smallest[metric] = (critical(args.z, paired.df) * paired.stderr,
                                    critical(args.z) * unpaired)
    took, cpu_took = time.perf_counter() - started, time.process_time() - cpu
    sep = " | " if args.markdown else "  "
    head = ["copy of good", "metric", "delta", "z unpaired (as gated before)",
            "z paired", "groups paired"]
    print(("| " if args.markdown else "") + sep.join(head) + (" |" if args.markdown else ""))
    if args.markdown:
        print("|" + "---|" * len(head))
    for name, metric, delta, z_un, z_pa, n in rows:
        cells = [name, metric, f"{delta:+.2g}", f"{z_un:.2f}", f"{z_pa:.1f}", str(n)]
        print(("| " if args.markdown else "") + sep.join(cells) + (" |" if args.markdown else ""))
    print()
    head = ["metric", f"smallest drop detected at z = {args.z:g}, paired",
            "unpaired", "ratio"]
    print(("| " if args.markdown else "") + sep.join(head) + (" |" if args.markdown else ""))
    if args.markdown:
        print("|" + "---|" * len(head))
    for metric, (paired, unpaired) in smallest.items():
        cells = [metric.rsplit(".", 1)[1], f"{paired:.2g}", f"{unpaired:.2g}",
                 f"{unpaired / paired:.0f}x" if paired else "-"]
        print(("| " if args.markdown else "") + sep.join(cells) + (" |" if args.markdown else ""))
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{__import__('torch').get_num_threads()}: {took:.1f} s wall, {cpu_took:.1f} s CPU "
          "(4 core evaluations at fast)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
