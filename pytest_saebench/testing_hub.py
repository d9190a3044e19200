"""A scratch Hugging Face cache, laid out the way ``huggingface_hub`` lays out its own, so the
hub path (a checkpoint naming a Hub model and a Hub dataset) is tested offline.

``put_repo`` writes a folder as a cached repository: content-addressed ``blobs/``, a
``snapshots/<commit>/`` tree of relative symlinks, and ``refs/main``. Models go in as
``save_pretrained`` writes them, datasets as the parquet shards ``push_to_hub`` uploads.
Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any


def repo_dir(hf_home: str | Path, repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder of ``repo_id`` under ``hf_home`` (``hub/models--owner--name``)."""
    return Path(hf_home) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"


def put_repo(hf_home: str | Path, repo_id: str, src: str | Path,
             repo_type: str = "model") -> Path:
    """Store the files under ``src`` as the ``main`` revision of ``repo_id``; returns the
    snapshot folder. The commit id is derived from the content, so a rebuild is stable."""
    src = Path(src)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    commit = hashlib.sha1()
    blobs = []
    for f in files:
        data = f.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        blobs.append((f.relative_to(src), digest, data))
        commit.update(f"{f.relative_to(src).as_posix()}:{digest}\n".encode())
    root = repo_dir(hf_home, repo_id, repo_type)
    snapshot = root / "snapshots" / commit.hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, digest, data in blobs:
        blob = root / "blobs" / digest
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit.hexdigest())
    return snapshot


def save_model(hf_home: str | Path, repo_id: str, model: Any, tokenizer: Any) -> Path:
    """``model.save_pretrained`` + ``tokenizer.save_pretrained``, stored as ``repo_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return put_repo(hf_home, repo_id, tmp)


def save_dataset(hf_home: str | Path, repo_id: str, dataset: Any, n_shards: int = 2,
                 extra: dict[str, bytes] | None = None) -> Path:
    """A ``datasets.Dataset`` as ``data/train-0000i-of-0000n.parquet`` shards (the layout of
    ``push_to_hub``), plus ``extra`` files (e.g. SAELens's ``sae_lens.json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").mkdir()
        for i in range(n_shards):
            shard = dataset.shard(num_shards=n_shards, index=i, contiguous=True)
            shard.to_parquet(str(Path(tmp) / "data" / f"train-{i:05d}-of-{n_shards:05d}.parquet"))
        for name, blob in (extra or {}).items():
            (Path(tmp) / name).write_bytes(blob)
        return put_repo(hf_home, repo_id, tmp, repo_type="dataset")


def random_gpt_neox(tokenizer: Any, d_model: int = 64, n_layers: int = 2, seed: int = 0,
                    outlier_dims: int = 3, outlier: float = 8.0) -> Any:
    """A small GPT-NeoX (Pythia's architecture) with random weights and a few residual
    dimensions far from zero, as real LMs have: what TransformerLens's weight processing
    (LayerNorm folding, centring) changes most."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=d_model,
                        num_hidden_layers=n_layers, num_attention_heads=4,
                        intermediate_size=4 * d_model, max_position_embeddings=256,
                        rotary_pct=0.25, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg)
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[:, :outlier_dims] += outlier
    return model.eval()
