"""The tensor cache: hits, misses on any key change, corruption, concurrent writers, and
bit-identical results with and without it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch

from pytest_saebench.cache import TensorCache, model_fingerprint
from pytest_saebench.evals import core_side
from tests.helpers import make_runner

PARTS = {"model": "m:abc", "hook": "blocks.0.hook_resid_post", "context": 32, "seed": 1}


def _compute(calls: list[int]):
    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor([7])}
    return compute


def test_hit_after_miss_and_miss_on_any_key_change(tmp_path):
    calls: list[int] = []
    first = TensorCache(tmp_path).get("act", PARTS, _compute(calls))
    again = TensorCache(tmp_path)  # a new process: nothing in memory
    second = again.get("act", PARTS, _compute(calls))
    assert len(calls) == 1 and again.stats["hit"] == 1
    assert torch.equal(first["x"], second["x"]) and torch.equal(first["n"], second["n"])
    for key, value in [("model", "m:abd"), ("hook", "blocks.1.hook_resid_post"),
                       ("context", 64), ("seed", 2), ("extra", True)]:
        TensorCache(tmp_path).get("act", {**PARTS, key: value}, _compute(calls))
    TensorCache(tmp_path).get("other-kind", PARTS, _compute(calls))
    assert len(calls) == 7
    assert not list(tmp_path.glob("*.lock"))  # no 0-byte lock files left behind


def test_library_version_is_part_of_the_key(tmp_path, monkeypatch):
    from pytest_saebench import versions

    key = TensorCache.key("act", PARTS)
    real = versions.metadata.version
    monkeypatch.setattr(versions.metadata, "version",
                        lambda dist: "0.0.1" if dist == "torch" else real(dist))
    assert TensorCache.key("act", PARTS) != key


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-sidecar", "bad-sidecar"])
def test_corrupt_entry_is_recomputed(tmp_path, damage):
    calls: list[int] = []
    TensorCache(tmp_path).get("act", PARTS, _compute(calls))
    data = next(tmp_path.glob("*.safetensors"))
    meta = data.with_suffix(".json")
    blob = bytearray(data.read_bytes())
    if damage == "flip":
        blob[-1] ^= 0xFF
        data.write_bytes(bytes(blob))
    elif damage == "truncate":
        data.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "no-sidecar":
        meta.unlink()
    else:
        meta.write_text("{")
    cache = TensorCache(tmp_path)
    out = cache.get("act", PARTS, _compute(calls))
    assert len(calls) == 2 and cache.stats["corrupt"] == 1
    assert torch.equal(out["x"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert TensorCache(tmp_path).get("act", PARTS, _compute(calls)) is not None
    assert len(calls) == 2  # the recomputed entry is good again


def test_size_cap_drops_least_recently_used(tmp_path):
    calls: list[int] = []
    cache = TensorCache(tmp_path, max_bytes=1500)
    for i in range(4):
        cache.get("act", {**PARTS, "i": i}, _compute(calls))
    total = sum(p.stat().st_size for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert total <= 1500
    assert len(list(tmp_path.glob("*.safetensors"))) < 4
    assert (tmp_path / f"{TensorCache.key('act', {**PARTS, 'i': 3})}.json").exists()


def test_two_processes_compute_an_entry_once(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, torch
        from pytest_saebench.cache import TensorCache
        def compute():
            with open({str(tmp_path / "computed")!r}, "a") as fh:
                fh.write("x")
            time.sleep(1.0)
            return {{"x": torch.ones(1000)}}
        out = TensorCache({str(tmp_path / "cache")!r}).get("act", {{"k": 1}}, compute)
        assert float(out["x"].sum()) == 1000.0
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert (tmp_path / "computed").read_text() == "x"


def test_model_fingerprint_changes_with_any_weight(tiny_world):
    from pytest_saebench.loading.model import load_local_model

    model = load_local_model(tiny_world.model_dir, "cpu", "float32")
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    with torch.no_grad():
        model.blocks[0].mlp.W_in[0, 0] += 1e-6
    assert model_fingerprint(model) != before


def _core(sae_dir, tmp_path=None, no_cache=False):
    runner = make_runner(sae_dir)
    if tmp_path is not None:
        runner.settings = dataclasses.replace(runner.settings, cache_dir=str(tmp_path),
                                              cache=not no_cache)
    sae_id = next(iter(runner.checkpoints))
    res = runner.results(sae_id).evals["core"]
    return res.metrics, res.stderr, runner.tensor_cache().stats


def test_results_bit_identical_with_and_without_cache(tiny_world, tmp_path):
    plain, plain_se, _ = _core(tiny_world.trained)
    cold, cold_se, cold_stats = _core(tiny_world.trained, tmp_path)
    warm, warm_se, warm_stats = _core(tiny_world.trained, tmp_path)
    off, off_se, off_stats = _core(tiny_world.trained, tmp_path, no_cache=True)
    # one entry per phase and look segment (evals/core_side.py)
    assert cold_stats["miss"] == warm_stats["hit"] >= 2 and warm_stats["miss"] == 0
    assert off_stats["hit"] == 0
    assert plain == cold == warm == off  # exact float equality, not approx
    assert plain_se == cold_se == warm_se == off_se
    # another checkpoint reuses the entries: the key never names the SAE
    _, _, other = _core(tiny_world.random, tmp_path)
    assert other["hit"] == cold_stats["miss"] and other["miss"] == 0


def test_probing_and_absorption_identical_cold_and_warm(tiny_world, tmp_path):
    from pytest_saebench.evals import absorption
    from tests.test_sparse_probing import TINY

    small = dataclasses.replace(absorption.PRESETS["fast"], max_vocab_words=300,
                                gt_probe_epochs=5, k_sparse_probe_epochs=5)

    def run() -> tuple[dict, dict]:
        runner = make_runner(tiny_world.trained, sparse_probing=TINY, absorption=small)
        runner.settings = dataclasses.replace(runner.settings, cache_dir=str(tmp_path))
        sae_id = next(iter(runner.checkpoints))
        res = runner.results(sae_id, ["sparse_probing", "absorption"])
        return ({**res.evals["sparse_probing"].metrics,
                 **res.evals["absorption_first_letter"].metrics,
                 "unstructured": res.evals["absorption_first_letter"].unstructured},
                runner.tensor_cache().stats)

    cold, cold_stats = run()
    warm, warm_stats = run()
    assert cold_stats["miss"] >= 3 and warm_stats["miss"] == 0
    assert warm_stats["hit"] == cold_stats["miss"]
    assert cold == warm


def test_tpp_probes_come_from_the_disk_cache_in_a_new_run(tiny_world, tmp_path, monkeypatch):
    from pytest_saebench.evals import get_eval
    from tests.test_tpp import TINY as cfg

    # the modules the runner's registry holds (an earlier in-process pytester run may have
    # imported, then dropped, others of the same name)
    tpp = get_eval("tpp")
    probing = tpp.probing

    trained = []
    real = probing.train_probe
    monkeypatch.setattr(probing, "train_probe", lambda *a, **k: trained.append(1) or real(*a, **k))

    def run() -> tuple[dict, int]:
        runner = make_runner(tiny_world.trained, tpp=cfg)
        runner.settings = dataclasses.replace(runner.settings, cache_dir=str(tmp_path))
        before = len(trained)
        res = runner.results(next(iter(runner.checkpoints)), ["tpp"]).evals["tpp"]
        return {**res.metrics, **res.unstructured}, len(trained) - before

    cold, cold_fits = run()
    warm, warm_fits = run()
    assert cold_fits == len(tpp.CLASSES["supersense_wordnet"]) and warm_fits == 0
    assert cold == warm


def test_recomputing_clean_logits_from_cached_activations_matches(tiny_world, monkeypatch):
    kept, _, _ = _core(tiny_world.trained)
    monkeypatch.setattr(core_side, "MAX_LOGPROB_BYTES", 0)
    monkeypatch.setattr(core_side, "MAX_ACTIVATION_BYTES", 0)
    spliced, _, _ = _core(tiny_world.trained)
    assert spliced.keys() == kept.keys()
    for key, value in kept.items():
        assert spliced[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_clean_logprobs_too_large_to_cache_are_computed_once_per_sweep(tiny_world, tmp_path,
                                                                        monkeypatch):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("trained", "random"):
        (sweep / name).symlink_to(getattr(tiny_world, name))
    monkeypatch.setattr(core_side, "MAX_LOGPROB_BYTES", 0)  # never in the cached side
    calls: list[int] = []
    real = core_side.logits_with_replacement

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(core_side, "logits_with_replacement", counted)

    def sweep_core(held_bytes: int) -> tuple[list[dict], list[int]]:
        monkeypatch.setattr(core_side, "MAX_HELD_LOGPROB_BYTES", held_bytes)
        runner = make_runner(sweep)
        metrics, per_checkpoint = [], []
        for sae_id in ("sweep/trained", "sweep/random"):
            before = len(calls)
            metrics.append(runner.results(sae_id).evals["core"].metrics)
            per_checkpoint.append(len(calls) - before)
        return metrics, per_checkpoint

    # each runner computes the SAE-independent side (clean and ablated runs) for its first
    # checkpoint; held, the clean log-probs of that run are kept (one ablated run per batch,
    # then nothing); not held, the clean forward from the hook layer on runs per checkpoint
    held, held_calls = sweep_core(2 << 30)
    again, again_calls = sweep_core(0)
    assert again_calls[0] == 2 * held_calls[0] and held_calls[0] == again_calls[1] > 0
    assert held_calls[1] == 0  # the second checkpoint reuses the first one's
    assert held == again  # identical numbers, not approximately equal


def test_a_restored_disk_cache_rebuilds_clean_logprobs_from_the_final_residual(
        tiny_world, tmp_path, monkeypatch):
    """Clean log-probs too large for the cache (SmolLM2's) are rebuilt in the next process
    from the cached last-block output, by the final norm and unembedding alone, and the
    numbers are those of a run that kept the log-probs themselves, bit for bit."""
    kept, _ = run_core_cached(tiny_world.trained, tmp_path / "kept")
    monkeypatch.setattr(core_side, "MAX_LOGPROB_BYTES", 0)
    monkeypatch.setattr(core_side, "MAX_HELD_LOGPROB_BYTES", 0)
    hooks: list[str] = []
    real = core_side.logits_with_replacement
    monkeypatch.setattr(core_side, "logits_with_replacement",
                        lambda m, t, hook, x: hooks.append(hook.name) or real(m, t, hook, x))
    first, _ = run_core_cached(tiny_world.trained, tmp_path / "c")
    hooks.clear()
    restored, runner = run_core_cached(tiny_world.trained, tmp_path / "c")
    model = runner.model_for(next(iter(runner.checkpoints)))
    # the spliced runs read the SAE's hook; every other call is a rebuild from the end
    rebuilt = [h for h in hooks if h != "blocks.0.hook_resid_post"]
    assert rebuilt and set(rebuilt) == {core_side.final_hook(model).name}
    assert restored == first == kept


def run_core_cached(sae_dir, cache_dir):
    """Core's metrics from a new runner (a new process's) on the disk cache ``cache_dir``,
    and the runner."""
    runner = make_runner(sae_dir)
    runner.settings = dataclasses.replace(runner.settings, cache_dir=str(cache_dir))
    return runner.results(next(iter(runner.checkpoints))).evals["core"].metrics, runner


def test_no_cache_option_and_default_location(pytester, tiny_world):
    from tests.conftest import SMALL_PYPROJECT

    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    pytester.runpytest(f"--sae-path={tiny_world.trained}").assert_outcomes(passed=1)
    cache = pytester.path / ".pytest_cache" / "d" / "saebench"
    # one entry per phase and look segment
    assert {p.name.split("-")[1] for p in cache.glob("core-*.safetensors")} == {"loss", "var"}
    pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-no-cache",
                       "--saebench-cache-dir=elsewhere").assert_outcomes(passed=1)
    assert not (pytester.path / "elsewhere").exists()



def test_versions_come_from_package_metadata_and_key_the_cache(monkeypatch):
    """transformer_lens has no __version__; its installed version still keys the cache."""
    from importlib import metadata

    from pytest_saebench import cache, versions
    from pytest_saebench.results import environment

    assert versions.library_versions()["transformer_lens"] == metadata.version("transformer-lens")
    assert environment("cpu", "float32", 0)["transformer_lens"] != "unknown"
    store = cache.TensorCache(None)
    before = store.key("core-loss", {"a": 1})
    real = metadata.version
    monkeypatch.setattr(versions.metadata, "version",
                        lambda dist: "99.0" if dist == "transformer-lens" else real(dist))
    assert store.key("core-loss", {"a": 1}) != before


def test_an_adaptive_run_computes_only_the_looks_it_takes_and_a_fixed_run_extends_them(
        tiny_world, tmp_path):
    """The SAE-independent passes are cached by look segment (evals/core_side.py): a run
    decided at the first look computes one segment per phase; a fixed run then reads those
    and computes the rest, with the numbers of a run without the cache."""
    from pytest_saebench.evals.core import Config
    from pytest_saebench.gates.thresholds import Threshold

    cfg = Config(batch_size_prompts=8, n_eval_reconstruction_batches=8,
                 n_eval_sparsity_variance_batches=16, context_size=0)
    ev = "core.reconstruction_quality.explained_variance"

    def core(budget: str, cache: bool = True):
        runner = make_runner(tiny_world.trained, cfg=cfg)
        runner.settings = dataclasses.replace(
            runner.settings, cache_dir=str(tmp_path), cache=cache, budget=budget,
            thresholds=(Threshold(ev, min=0.5, z=3.0),))
        res = runner.results(next(iter(runner.checkpoints))).evals["core"]
        return res, dict(runner.tensor_cache().stats)

    adaptive, first = core("adaptive")
    assert adaptive.unstructured["looks"]["stopped_at"] == 0
    assert first["miss"] == 2 and first["hit"] == 0  # the first look's segment of each phase
    fixed, then = core("fixed")
    assert then["hit"] == 2 and then["miss"] >= 2
    plain, _ = core("fixed", cache=False)
    assert fixed.metrics == plain.metrics and fixed.stderr == plain.stderr
