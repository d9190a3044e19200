"""Token windows from a large dataset: time and memory must follow the tokens an eval reads,
not the dataset's size.

    python benchmarks/dataset_streaming.py [--sizes 1 8 64] [--windows 320]

Builds parquet datasets of SIZE copies of the embedded training corpus (20 MB of text each,
8,044 documents; the largest is stored as a Hub dataset repository in a scratch Hugging Face
cache and read by name, offline), then in a fresh process per size opens it and cuts the
windows core's ``fast`` preset reads (320 x 128 tokens, seed 42). Prints wall and CPU
seconds and the process's peak RSS; ``--eager`` also times ``datasets.load_dataset`` without
streaming (what the plugin did before it streamed), which converts the whole dataset first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, copies: int) -> Path:
    """``root/data-<copies>x/`` with one parquet shard per corpus copy (documents renumbered)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pytest_saebench import reference

    out = root / f"data-{copies}x"
    if out.exists():
        return out
    out.mkdir(parents=True)
    base = reference.corpus_dataset("train").select_columns(["text"]).data.table
    for i in range(copies):
        table = pa.table({"text": base.column("text"),
                          "copy": pa.array([i] * base.num_rows, pa.int32())})
        pq.write_table(table, out / f"train-{i:05d}-of-{copies:05d}.parquet")
    return out


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def measure(spec: str, windows: int, eager: bool) -> dict:
    """Runs in a fresh process: open ``spec`` and cut the windows. Times and memory count
    from after the imports (the same for every size)."""
    import datasets
    from transformers import AutoTokenizer

    from pytest_saebench import reference
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    tokenizer = AutoTokenizer.from_pretrained(str(reference.MODEL_DIR))
    token_windows(tokenizer, reference.corpus_dataset("heldout"), 1, 8, True, 0)  # warm
    base = _rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    if eager:
        files = sorted(str(p) for p in Path(spec).glob("*.parquet"))
        with tempfile.TemporaryDirectory() as cache:
            ds = datasets.load_dataset("parquet", data_files=files, split="train",
                                       cache_dir=cache)
            ds.shuffle(seed=42)[0]
        rows = len(ds)
    else:
        source = load_text_dataset(spec)
        tokens = token_windows(tokenizer, source, windows, 128, True, seed=42)
        rows = int(tokens.shape[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "peak_rss_mib": peak, "added_mib": peak - base, "rows": rows}


def _child(spec: str, windows: int, eager: bool, env: dict[str, str]) -> dict:
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import dataset_streaming as b; "
            f"print(json.dumps(b.measure({spec!r}, {windows}, {eager})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--windows", type=int, default=320)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) /
                        "saebench-streaming-bench")
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    from pytest_saebench.testing_hub import put_repo

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"{args.windows} windows x 128 tokens; {os.cpu_count()} CPUs; a fresh process per "
          "row, timed after its imports; memory: peak RSS above the RSS after the imports")
    print(f"{'dataset':<34} {'on disk':>9} {'wall s':>7} {'CPU s':>7} {'added RSS':>10}")
    for copies in args.sizes:
        folder = build(args.root, copies)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        rows = [(f"local parquet, {copies}x corpus", str(folder), env)]
        if copies == max(args.sizes):
            hf = args.root / "hf"
            if not (hf / "hub").exists():
                put_repo(hf, "bench/large-corpus", folder, repo_type="dataset")
            rows.append((f"Hub cache by name, {copies}x", "bench/large-corpus",
                         {**env, "HF_HOME": str(hf)}))
        for label, spec, child_env in rows:
            got = _child(spec, args.windows, False, child_env)
            print(f"{label:<34} {size:>7.0f} MB {got['wall_s']:>7.2f} {got['cpu_s']:>7.2f} "
                  f"{got['added_mib']:>6.0f} MiB")
        if args.eager:
            got = _child(str(folder), args.windows, True, env)
            print(f"{'  eager load_dataset (old)':<34} {size:>7.0f} MB {got['wall_s']:>7.2f} "
                  f"{got['cpu_s']:>7.2f} {got['added_mib']:>6.0f} MiB")


if __name__ == "__main__":
    main()
