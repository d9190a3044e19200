"""Shared tiny world: a corpus, a trained 2-layer LM and SAEs, built once per session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# pytester's in-process runs drop modules first imported inside them; datasets/pyarrow
# cannot be imported twice in one process, so the heavy stack is imported up front.
import datasets  # noqa: F401
import pytest
import sae_lens  # noqa: F401
import transformer_lens  # noqa: F401
from hypothesis import settings

# The default profile, "ci", is derandomised: the same commit draws the same examples on every
# machine, so a run that passed CI passes on the next one. HYPOTHESIS_PROFILE=explore draws
# new examples each run and keeps failures in .hypothesis/ (add each as an @example).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A threshold consults a random SAE of the checkpoint's shape (the null reference), which
# evaluates each shape a second time; the tests of that (tests/test_null.py) turn it on, the
# others leave it off to keep the suite's time. Null rules are evaluated either way.
os.environ.setdefault("SAEBENCH_NULL_REFERENCE", "off")

HOOK = "blocks.0.hook_resid_post"
CONTEXT = 32


@dataclass
class TinyWorld:
    """Paths of the shared test artifacts."""

    root: Path
    model_dir: Path
    corpus: Path
    trained: Path  # standard ReLU SAE, trained
    random: Path  # same shape, random
    topk: Path  # TopK SAE, trained

    def metadata(self, **extra) -> dict:
        """SAE metadata pointing at the tiny model and corpus."""
        return {"model_name": str(self.model_dir), "hook_name": HOOK, "context_size": CONTEXT,
                "prepend_bos": True, "dataset_path": str(self.corpus), **extra}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    """Build (once) the tiny model, corpus and three SAEs."""
    from pytest_saebench import testing as T
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    root = tmp_path_factory.mktemp("tiny_world")
    corpus = T.make_corpus(1500, seed=0)
    corpus_path = root / "corpus.jsonl"
    corpus_path.write_text("\n".join(json.dumps({"text": d}) for d in corpus))
    model = T.build_tiny_model(root / "model", corpus, steps=150, n_ctx=64)
    world = TinyWorld(root, root / "model", corpus_path, root / "trained", root / "random",
                      root / "topk")
    ds = load_text_dataset(str(corpus_path))
    tokens = token_windows(model.tokenizer, ds, 256, CONTEXT, True, seed=123)
    acts = T.collect_activations(model, tokens, HOOK, 0)
    d_in = model.cfg.d_model
    T.make_sae(d_in, 128, "standard", metadata=world.metadata(), seed=1).save_model(world.random)
    sae = T.make_sae(d_in, 128, "standard", metadata=world.metadata(), seed=1)
    T.train_sae(sae, acts, steps=300, l1_coefficient=3e-3)
    sae.save_model(world.trained)
    topk = T.make_sae(d_in, 128, "topk", k=8, metadata=world.metadata(), seed=2)
    T.train_sae(topk, acts, steps=300)
    topk.save_model(world.topk)
    return world


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tensor cache for the session's `fast` gate runs of the example checkpoints on the
    reference model: their SAE-independent work is done once, as CI's restored cache does."""
    return tmp_path_factory.mktemp("saebench-cache")


@pytest.fixture(scope="session")
def user_install(tmp_path_factory: pytest.TempPathFactory):
    """README's install in a venv that sees nothing of this environment (tests/user_install.py),
    shared by the install and workflow tests."""
    from tests import user_install as U

    return U.make(tmp_path_factory.mktemp("user-install"))


@pytest.fixture(scope="session")
def hub_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline Hugging Face cache and the SAEs its trainers wrote (tests/hub_world.py):
    ``ROOT/hf`` is the cache, ``ROOT/saelens`` README's quick start's output."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("hub")
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    built = subprocess.run([sys.executable, str(Path(__file__).parent / "hub_world.py"),
                            str(root)], env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    return root


SMALL_PYPROJECT = """
[tool.pytest-saebench]
select-evals = ["core"]

[tool.pytest-saebench.evals.core]
batch_size_prompts = 4
n_eval_reconstruction_batches = 2
n_eval_sparsity_variance_batches = 4
"""
