"""The embedded reference: corpus, tokenizer, model and example checkpoints, all offline."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from pytest_saebench import reference
from pytest_saebench.loading.data import load_text_dataset, token_windows
from pytest_saebench.loading.model import load_model
from pytest_saebench.reference import build_corpus

REPO = Path(__file__).parents[1]
EXAMPLES = REPO / "example_tests"
CHECKPOINTS = EXAMPLES / "checkpoints"


@pytest.fixture(scope="module")
def ref_model():
    """The shipped reference model, loaded by name."""
    return load_model(reference.MODEL_NAME, "cpu", "float32")


def test_corpus_is_real_text_with_a_split():
    sizes: dict[tuple[str, str], int] = {}
    ids: dict[str, set[str]] = {}
    for split in reference.SPLITS:
        with gzip.open(reference.CORPUS_DIR / f"{split}.jsonl.gz", "rt") as fh:
            rows = [json.loads(line) for line in fh]
        ids[split] = {r["id"] for r in rows}
        for r in rows:
            key = (split, r["source"])
            sizes[key] = sizes.get(key, 0) + len(r["text"])
    assert sum(sizes.values()) > 10_000_000
    assert {s for _, s in sizes} == {"wordnet", "kjv", "shakespeare", "spelling"}
    assert not ids["train"] & ids["heldout"]
    # Shuffled: a reader that takes documents in order sees every source early on.
    assert {r["source"] for r in rows[:40]} == {"wordnet", "kjv", "shakespeare", "spelling"}
    assert all(build_corpus.is_heldout(i) for i in ids["heldout"])
    notice = (REPO / "NOTICE").read_text()
    for needle in ("WordNet 3.0 Copyright 2006 by Princeton University", "King James",
                   "Sean Stewart, MIT License"):
        assert needle in notice


def test_spelling_lessons_spell_frequent_corpus_words():
    docs = [{"text": "The cat sat. The cat ran; a dog.", "source": "x", "id": "x"}]
    lessons = list(build_corpus.spelling_docs(docs))
    text = "\n".join(d["text"] for d in lessons)
    lines = text.splitlines()
    words = ("the", "cat", "sat", "ran", "dog")  # not "a": one letter
    assert len(lines) == len(words) * build_corpus.LINES_PER_WORD
    for word in words:
        spelled = " ".join(word)
        forms = {f"{shown}: {spelled}" for shown in (word, word.capitalize())}
        forms |= {f"The word {shown} is spelled {spelled}." for shown in (word, word.capitalize())}
        forms |= {f"{shown} begins with the letter {word[0].upper()}."
                  for shown in (word, word.capitalize())}
        forms |= {f"{word[0].upper()} is for {shown}." for shown in (word, word.capitalize())}
        assert sum(line in forms for line in lines) == build_corpus.LINES_PER_WORD, word
    assert lessons == list(build_corpus.spelling_docs(docs))  # seeded


def test_named_datasets_resolve_offline():
    heldout = load_text_dataset("saebench-reference:heldout")
    assert len(heldout.data) > 100 and heldout.column == "text" and not heldout.streamed


def test_model_loads_by_name_with_its_tokenizer(ref_model):
    tok = ref_model.tokenizer
    assert ref_model.cfg.d_vocab == len(tok) == 4096
    ids = tok("In the beginning God created", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "In the beginning God created"
    assert ref_model.cfg.n_layers == 4


def test_heldout_loss_well_below_unigram(ref_model):
    tokens = token_windows(ref_model.tokenizer, load_text_dataset("saebench-reference:heldout"),
                           128, 128, True, seed=0)
    with torch.inference_mode():
        model_ce = float(ref_model(tokens, return_type="loss"))
    # A unigram fit on the very tokens it is scored on: a lower bound for any unigram model.
    targets = tokens[:, 1:].flatten()
    counts = torch.bincount(targets, minlength=ref_model.cfg.d_vocab).double()
    p = counts[counts > 0] / counts.sum()
    unigram_ce = float(-(p * p.log()).sum())
    assert model_ce < unigram_ce - 1.0, (model_ce, unigram_ce)
    card = (reference.MODEL_DIR / "MODEL_CARD.md").read_text()
    stats = json.loads((reference.MODEL_DIR / "training_stats.json").read_text())
    assert f"{stats['heldout_ce']:.3f}" in card and f"{stats['unigram_ce']:.3f}" in card
    assert math.isclose(stats["heldout_ce"], model_ce, abs_tol=0.15)


def _gate(pytester, name: str, cache: Path):
    shutil.copy(EXAMPLES / "pyproject.toml", pytester.path / "pyproject.toml")
    shutil.copy(EXAMPLES / "test_sae_quality.py", pytester.path / "test_sae_quality.py")
    return pytester.runpytest(f"--sae-path={CHECKPOINTS / name}", "-p", "no:cacheprovider",
                              f"--saebench-cache-dir={cache}")


@pytest.mark.slow
def test_good_checkpoint_passes_every_gate(pytester, reference_cache):
    result = _gate(pytester, "good", reference_cache)
    assert result.ret == 0, result.stdout.str()
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    metrics = data["saes"]["good"]["evals"]["core"]["eval_result_metrics"]
    assert metrics["model_performance_preservation"]["ce_loss_score"] >= 0.98
    assert metrics["reconstruction_quality"]["explained_variance"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name, metrics", [
    ("undertrained", ["core.reconstruction_quality.explained_variance",
                      "core.model_performance_preservation.ce_loss_score",
                      "tpp.tpp_metrics.tpp_threshold_20_total_metric"]),
    ("dense", ["core.sparsity.l0"]),
    # 200 steps: explained variance 0.83 and CE-loss score 0.975 are close; TPP is not.
    ("ladder/step_0200", ["core.reconstruction_quality.explained_variance",
                          "core.model_performance_preservation.ce_loss_score",
                          "tpp.tpp_metrics.tpp_threshold_20_total_metric"]),
])
def test_bad_checkpoints_fail_on_the_expected_metric(pytester, reference_cache, name, metrics):
    result = _gate(pytester, name, reference_cache)
    assert result.ret == 1
    sae_id = name.rsplit("/", 1)[-1]
    # a threshold with z (explained variance in the example) gives its interval
    result.stdout.re_match_lines(
        [rf"^{m} = \S+ ([<>] (min|max) \S+|± .* \(t, \d+ df\): wholly (below min|above max) "
         rf"\S+) \(sae {sae_id}, suite fast\)$" for m in metrics], consecutive=False)


@pytest.mark.slow
def test_example_tests_on_the_shipped_sweep_fail_only_where_documented(pytester, reference_cache):
    """What users copy (example_tests/) passes on k16 and k64; k8 fails only the fidelity
    gates its sparsity costs (EV 0.829, CE-loss score 0.971), as pyproject and README say."""
    result = _gate(pytester, "sweep", reference_cache)
    assert result.ret == 1
    lines = result.stdout.str().splitlines()
    failed = sorted(line.split()[1] for line in lines if line.startswith("FAILED "))
    assert failed == [
        "saebench::threshold[sweep/k8::core.model_performance_preservation.ce_loss_score]",
        "saebench::threshold[sweep/k8::core.reconstruction_quality.explained_variance]",
        "test_sae_quality.py::test_reconstruction_is_good_enough[sweep/k8]",
    ], result.stdout.str()[-3000:]


@pytest.mark.slow
def test_sweep_orders_by_sparsity(tmp_path):
    from pytest_saebench.evals.core import PRESETS
    from tests.helpers import make_runner

    runner = make_runner(CHECKPOINTS / "sweep", cfg=PRESETS["fast"])
    l0 = {k: runner.results(k).value("core.sparsity.l0") for k in runner.checkpoints}
    ev = {k: runner.results(k).value("core.reconstruction_quality.explained_variance")
          for k in runner.checkpoints}
    # TopK keeps k pre-activations; the rare one that is exactly 0 after the ReLU lowers L0.
    assert l0 == pytest.approx({"sweep/k8": 8, "sweep/k16": 16, "sweep/k64": 64}, abs=0.01)
    assert ev["sweep/k8"] < ev["sweep/k16"] < ev["sweep/k64"]


@pytest.mark.slow
def test_demo_says_the_random_failure_is_designed_and_cleans_up(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest_saebench", "demo"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "demo: as designed" in done.stdout
    assert "random::core." in done.stdout  # the random SAE's gates ran and failed
    # it says what it is doing while it builds, and prints no empty progress lines
    before = done.stdout.split("test session starts", 1)[0].splitlines()[:-1]
    assert "demo: training a TopK SAE" in done.stdout and all(line.strip() for line in before)
    assert "demo: removed" in done.stdout
    assert not list(tmp_path.glob("saebench-demo-*"))
