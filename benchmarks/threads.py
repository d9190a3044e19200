"""torch CPU threads alone and under load: forward passes of the reference model.

    python benchmarks/threads.py [--passes 20] [--threads 1 2 4]

For each thread count, one process runs ``--passes`` forward passes (32 windows x 128
tokens, up to the reference hook) alone, then two such processes run at once (two CI jobs on
one runner, or two xdist workers). Prints the median wall and CPU seconds per pass.
``threads.available_cpus()`` is what the plugin picks by default (``--saebench-threads 0``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(threads: int, passes: int) -> dict:
    """Runs in a fresh process: the timed forward passes."""
    import torch

    from pytest_saebench import reference
    from pytest_saebench.loading.model import load_model

    torch.set_num_threads(threads)
    model = load_model(reference.MODEL_NAME, "cpu", "float32")
    tokens = torch.randint(0, model.cfg.d_vocab, (32, 128), generator=torch.Generator()
                           .manual_seed(0))
    walls, cpus = [], []
    with torch.inference_mode():
        model(tokens, stop_at_layer=3)  # warm
        for _ in range(passes):
            wall, cpu = time.perf_counter(), time.process_time()
            model(tokens, stop_at_layer=3)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def _run(threads: int, passes: int, at_once: int) -> list[dict]:
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import threads as b; "
            f"print(json.dumps(b.child({threads}, {passes})))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
             for _ in range(at_once)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    from pytest_saebench.threads import available_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+")
    args = parser.parse_args()
    cpus = available_cpus()
    counts = args.threads or sorted({1, cpus, os.cpu_count() or 1, 2 * cpus})
    print(f"{os.cpu_count()} cores, {cpus} available to this process (the plugin's default); "
          "median seconds per forward pass (32 x 128 tokens, reference model, 3 blocks)")
    print(f"{'threads':>8} {'alone wall':>11} {'alone CPU':>10} {'2 at once wall':>15} "
          f"{'2 at once CPU':>14}")
    for n in counts:
        alone = _run(n, args.passes, 1)[0]
        both = _run(n, args.passes, 2)
        wall = max(r["wall"] for r in both)
        cpu = max(r["cpu"] for r in both)
        print(f"{n:>8} {alone['wall']:>11.3f} {alone['cpu']:>10.3f} {wall:>15.3f} {cpu:>14.3f}")


if __name__ == "__main__":
    main()
