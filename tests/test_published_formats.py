"""Published checkpoint formats, each written by its real library where it installs offline
(sparsify's ``save_to_disk``) or laid out as the published repositories lay them out: the
loaded SAE's forward equals the source library's, and core metrics equal those of the same
weights saved as SAELens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pytest_saebench import testing as T
from pytest_saebench.loading.checkpoints import discover
from pytest_saebench.loading.sae import load_sae
from tests.conftest import CONTEXT, HOOK
from tests.helpers import SMALL, make_runner

CORE = SMALL.__class__(**{**SMALL.__dict__, "context_size": CONTEXT})


def _w(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "sae_weights.safetensors"))


def _core(path: Path, world) -> dict:
    runner = make_runner(path, model=str(world.model_dir), dataset=str(world.corpus), cfg=CORE)
    return runner.results(next(iter(runner.checkpoints))).evals["core"].metrics


def _same_core(a: Path, b: Path, world, tol: float = 1e-5) -> None:
    ma, mb = _core(a, world), _core(b, world)
    for key, value in mb.items():
        if value is not None and "decoder_norm_max_deviation" not in key:
            assert ma[key] == pytest.approx(value, abs=tol, rel=tol), key


def _jumprelu_copy(world, out: Path, tensors: dict[str, torch.Tensor]) -> Path:
    sae = T.make_sae(tensors["W_enc"].shape[0], tensors["W_enc"].shape[1], "jumprelu",
                     metadata=world.metadata())
    sae.cfg.apply_b_dec_to_input = False  # Gemma/Llama Scope encode x, not x - b_dec
    sae.load_state_dict({k: v.clone() for k, v in tensors.items()})
    sae.save_model(out)
    return out


def _jumprelu_weights(world) -> dict[str, torch.Tensor]:
    w = _w(world.trained)
    return {**w, "threshold": torch.full((w["W_enc"].shape[1],), 0.02)}


# -- sparsify ------------------------------------------------------------------------------
def _sparsify_run(world, root: Path) -> tuple[Path, object]:
    """A sparsify run folder written by ``SparseCoder.save_to_disk`` (as its trainer does:
    ``<run>/<hookpoint>/`` plus the run's ``config.json``), holding the tiny TopK SAE."""
    from sparsify import SparseCoder, SparseCoderConfig

    w = _w(world.topk)
    d, f = w["W_enc"].shape
    coder = SparseCoder(d, SparseCoderConfig(k=8, num_latents=f))
    with torch.no_grad():
        coder.encoder.weight.copy_(w["W_enc"].T)
        coder.encoder.bias.copy_(w["b_enc"])
        coder.W_dec.copy_(w["W_dec"])
        coder.b_dec.copy_(w["b_dec"])
    run = root / "run"
    coder.save_to_disk(run / "layers.0")
    coder.save_to_disk(run / "layers.1.mlp")
    (run / "config.json").write_text(json.dumps({"model": str(world.model_dir),
                                                 "ctx_len": CONTEXT, "dataset": "x.bin"}))
    return run, coder


def test_sparsify_forward_hooks_and_core(tiny_world, tmp_path):
    run, coder = _sparsify_run(tiny_world, tmp_path)
    refs = {r.id: r for r in discover(run)}
    assert set(refs) == {"run/layers.0", "run/layers.1.mlp"}
    assert refs["run/layers.0"].hook_name == HOOK
    assert refs["run/layers.1.mlp"].hook_name == "blocks.1.hook_mlp_out"
    ref = refs["run/layers.0"]
    assert (ref.format, ref.model_name, ref.context_size) == ("sparsify", str(
        tiny_world.model_dir), CONTEXT)
    assert "dataset_path" not in ref.meta  # a tokenized .bin is not a text dataset
    x = torch.randn(50, coder.d_in) * 3
    with torch.no_grad():
        ours = load_sae(ref, "cpu").sae(x)
        assert torch.allclose(ours, coder(x).sae_out, atol=1e-5)
    _same_core(run / "layers.0", tiny_world.topk, tiny_world)


# -- Gemma Scope ---------------------------------------------------------------------------
def _jumprelu_numpy(w: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """Gemma Scope's published forward (its tutorial's JumpReLUSAE), in numpy."""
    pre = x @ w["W_enc"].numpy() + w["b_enc"].numpy()
    acts = pre * (pre > w["threshold"].numpy())
    return acts @ w["W_dec"].numpy() + w["b_dec"].numpy()


def test_gemma_scope_npz(tiny_world, tmp_path):
    w = _jumprelu_weights(tiny_world)
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_0" / "width_16k" / "average_l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in w.items()})
    ref = discover(tmp_path / "gemma-scope-2b-pt-res")[0]
    assert ref.id == "gemma-scope-2b-pt-res/layer_0/width_16k/average_l0_9"
    assert (ref.format, ref.hook_name, ref.model_name) == ("Gemma Scope", HOOK, "gemma-2-2b")
    x = np.random.default_rng(0).normal(size=(40, w["W_enc"].shape[0])).astype(np.float32) * 3
    with torch.no_grad():
        ours = load_sae(ref, "cpu").sae(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _jumprelu_numpy(w, x), atol=1e-4)
    _same_core(folder, _jumprelu_copy(tiny_world, tmp_path / "copy", w), tiny_world)


def test_gemma_scope_2_safetensors(tiny_world, tmp_path):
    w = _jumprelu_weights(tiny_world)
    folder = tmp_path / "gemma-scope-2-270m-pt" / "resid_post" / "layer_0_width_16k_l0_small"
    folder.mkdir(parents=True)
    save_file({k.lower(): v for k, v in w.items()}, str(folder / "params.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
        "hf_hook_point_in": "model.layers.0.output"}))
    ref = discover(folder)[0]
    assert (ref.format, ref.hook_name, ref.model_name) == ("Gemma Scope 2", HOOK,
                                                           "google/gemma-3-270m")
    _same_core(folder, _jumprelu_copy(tiny_world, tmp_path / "copy", w), tiny_world)


def test_gemma_scope_with_a_threshold_of_the_wrong_length_names_the_tensor(tiny_world,
                                                                         tmp_path):
    from pytest_saebench.errors import SaebenchError

    w = _jumprelu_weights(tiny_world)
    w["threshold"] = w["threshold"][:-3]
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_0" / "width_16k" / "average_l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in w.items()})
    d_in, d_sae = w["W_enc"].shape
    with pytest.raises(SaebenchError, match=f"params.npz: tensor 'threshold' has shape "
                                            f"\\[{d_sae - 3}\\] but its W_enc says d_in={d_in}, "
                                            f"d_sae={d_sae}") as info:
        discover(folder)
    assert "\n" not in str(info.value)


def test_gemma_scope_without_its_repository_name_says_how_to_fix(tiny_world, tmp_path):
    folder = tmp_path / "downloads" / "average_l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in
                                       _jumprelu_weights(tiny_world).items()})
    from pytest_saebench.errors import SaebenchError

    with pytest.raises(SaebenchError, match="repository name fixes its model and hook"):
        discover(folder)


# -- Llama Scope ---------------------------------------------------------------------------
def test_llama_scope(tiny_world, tmp_path):
    """Layout of fnlp/Llama-Scope: <sae>/hyperparams.json + <sae>/checkpoints/final.safetensors,
    nn.Linear names, one scalar threshold, inputs normalised by a dataset-wide norm."""
    w = _w(tiny_world.trained)
    d, f = w["W_enc"].shape
    folder = tmp_path / "Llama3_1-8B-Base-L0R-8x"
    (folder / "checkpoints").mkdir(parents=True)
    save_file({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
               "decoder.weight": w["W_dec"].T.contiguous(), "decoder.bias": w["b_dec"]},
              str(folder / "checkpoints" / "final.safetensors"))
    norm, theta = 5.0, 0.02
    (folder / "hyperparams.json").write_text(json.dumps({
        "d_model": d, "d_sae": f, "hook_point_in": HOOK, "hook_point_out": HOOK,
        "jump_relu_threshold": theta, "dataset_average_activation_norm": {"in": norm,
                                                                          "out": norm}}))
    ref = discover(folder)[0]
    assert (ref.format, ref.hook_name) == ("Llama Scope", HOOK)
    s = d ** 0.5 / norm  # sae_lens's reading: threshold in the scaled space, output unscaled
    folded = {"W_enc": w["W_enc"] * s, "b_enc": w["b_enc"], "W_dec": w["W_dec"] / s,
              "b_dec": w["b_dec"] / s, "threshold": torch.full((f,), theta * s)}
    x = torch.randn(40, d) * 3
    with torch.no_grad():
        pre = (x * s) @ w["W_enc"] + w["b_enc"]
        expected = ((pre * (pre > theta * s)) @ w["W_dec"] + w["b_dec"]) / s
        assert torch.allclose(load_sae(ref, "cpu").sae(x), expected, atol=1e-4)
    _same_core(folder, _jumprelu_copy(tiny_world, tmp_path / "copy", folded), tiny_world)


# -- Goodfire ------------------------------------------------------------------------------
def test_goodfire_pt(tiny_world, tmp_path):
    """Goodfire/Llama-3.1-8B-Instruct-SAE-l19: one .pth of encoder_linear/decoder_linear;
    their forward is relu(encoder_linear(x)) then decoder_linear (no b_dec subtraction)."""
    w = _w(tiny_world.trained)
    folder = tmp_path / "goodfire"
    folder.mkdir()
    torch.save({"encoder_linear.weight": w["W_enc"].T.contiguous(),
                "encoder_linear.bias": w["b_enc"],
                "decoder_linear.weight": w["W_dec"].T.contiguous(),
                "decoder_linear.bias": w["b_dec"]}, folder / "Llama-3.1-8B-Instruct-SAE-l19.pth")
    ref = discover(folder)[0]
    assert (ref.format, ref.hook_name) == ("Goodfire", "blocks.19.hook_resid_post")
    x = torch.randn(40, w["W_enc"].shape[0]) * 3
    with torch.no_grad():
        expected = torch.relu(x @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"]
        assert torch.allclose(load_sae(ref, "cpu").sae(x), expected, atol=1e-4)
    # another name: a same-stem .json says where it reads
    (folder / "Llama-3.1-8B-Instruct-SAE-l19.pth").rename(folder / "mine.pt")
    (folder / "mine.json").write_text(json.dumps({"hook_name": HOOK, "model_name": "x"}))
    copy = T.make_sae(*w["W_enc"].shape, "standard", metadata=tiny_world.metadata())
    copy.cfg.apply_b_dec_to_input = False
    copy.load_state_dict(w)
    copy.save_model(tmp_path / "copy")
    assert discover(folder / "mine.pt")[0].hook_name == HOOK
    _same_core(folder / "mine.pt", tmp_path / "copy", tiny_world)


def test_a_sweep_mixing_formats_survives_one_bad_member(pytester, tiny_world, tmp_path):
    """SAELens, sparsify and dictionary_learning side by side, plus one unreadable member:
    the valid ones are evaluated and gated, the bad one fails its own items in one line."""
    import shutil

    from tests.conftest import SMALL_PYPROJECT
    from tests.test_formats import _dictionary_learning

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "saelens")
    run, _ = _sparsify_run(tiny_world, sweep)
    shutil.rmtree(run / "layers.1.mlp")
    _dictionary_learning(tiny_world, tiny_world.trained, sweep / "dl" / "trainer_0",
                         "AutoEncoder")
    (sweep / "broken").mkdir()
    (sweep / "broken" / "sae.safetensors").write_bytes(b"not safetensors")
    (sweep / "broken" / "cfg.json").write_text(json.dumps({"d_in": 64, "k": 8}))
    ev = "core.reconstruction_quality.explained_variance"
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n"
                                         f'"{ev}" = {{ min = 0.1 }}\n{SMALL_PYPROJECT}')
    result = pytester.runpytest(f"--sae-path={sweep}", f"--saebench-dataset={tiny_world.corpus}",
                                "-v", "-p", "no:cacheprovider", "--saebench-html=report.html",
                                "--saebench-update-baseline=baselines/b.json",
                                "--junitxml=junit.xml")
    # JUnit names what the user pointed at, never the converted copy in a temporary folder
    import xml.etree.ElementTree as ET

    props = {p.get("name"): p.get("value") for p in
             ET.parse(pytester.path / "junit.xml").getroot().iter("property")}
    assert props["saebench.sae.sweep/dl/trainer_0.path"] == str(sweep / "dl" / "trainer_0")
    assert props["saebench.sae.sweep/run/layers.0.path"].startswith(str(sweep / "run"))
    result.stdout.fnmatch_lines_random([
        "*evaluate[[]sweep/saelens[]] PASSED*", "*evaluate[[]sweep/run/layers.0[]] PASSED*",
        "*evaluate[[]sweep/dl/trainer_0[]] PASSED*", "*evaluate[[]sweep/broken[]] FAILED*",
        f"*threshold[[]sweep/run/layers.0::{ev}[]] PASSED*",
        f"*threshold[[]sweep/broken::{ev}[]] ERROR*"])
    result.stdout.fnmatch_lines(["*sweep/broken/sae.safetensors: corrupt or truncated "
                                 "safetensors file*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in result.stdout.str()
    # the reports keep the good members' results and record the bad one under its id; a
    # baseline without it would drop that checkpoint, so none is written
    saes = json.loads((pytester.path / "saebench-results.json").read_text())["saes"]
    assert saes["sweep/saelens"]["error"] is None and saes["sweep/saelens"]["evals"]
    assert "corrupt or truncated" in saes["sweep/broken"]["error"]
    assert "sweep/broken: evaluation failed" in (pytester.path / "report.html").read_text()
    assert not (pytester.path / "baselines" / "b.json").exists()
    result.stdout.fnmatch_lines(["baseline: not written (evaluation failed for sweep/broken)"])
