"""The pieces of the hub path, each on its own: how a model name is loaded and recorded, what
a mid-training SAELens checkpoint becomes, pretokenized datasets, and the one-line errors."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from pytest_saebench.errors import SaebenchError

HOOK = "blocks.0.hook_resid_post"


# -- models ---------------------------------------------------------------------------------
def test_checkpoint_kwargs_with_the_users_on_top_never_device_or_dtype():
    from pytest_saebench.loading.model import loading_record, pretrained_kwargs

    kwargs = pretrained_kwargs({"center_writing_weights": False, "dtype": "bfloat16",
                                "fold_ln": False}, {"fold_ln": True, "n_devices": 1})
    assert kwargs == {"center_writing_weights": False, "fold_ln": True, "n_devices": 1}
    record = loading_record("gpt2", kwargs)
    assert record["loader"] == "HookedTransformer.from_pretrained_no_processing"
    assert record["fold_ln"] and not record["center_writing_weights"]
    assert not record["center_unembed"] and record["kwargs"] == kwargs
    local = loading_record("saebench-reference", {})
    assert local["loader"].startswith("local model directory") and not local["fold_ln"]


def test_unknown_or_uncached_hub_models_fail_in_one_line(monkeypatch):
    from pytest_saebench.loading.hub import check_model_cached

    with pytest.raises(SaebenchError, match="neither a local model directory nor a model "
                                            "TransformerLens knows; did you mean 'gpt2'"):
        check_model_cached("gtp2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(SaebenchError) as info:
        check_model_cached("pythia-70m-deduped")
    message = str(info.value)
    assert "(EleutherAI/pythia-70m-deduped) is not in the local Hugging Face cache" in message
    assert "HookedTransformer.from_pretrained_no_processing('pythia-70m-deduped')" in message
    assert "\n" not in message


def test_model_kwargs_from_cli_env_and_pyproject():
    from pytest_saebench.config import FileConfig, model_kwargs

    fc = FileConfig(None, {"model-kwargs": {"fold_ln": True}}, "pyproject.toml "
                    "[tool.pytest-saebench]")
    assert model_kwargs({}, fc, {}) == {"fold_ln": True}
    assert model_kwargs({}, fc, {"SAEBENCH_MODEL_KWARGS": '{"n_devices": 2}'}) == \
        {"n_devices": 2}
    assert model_kwargs({"saebench_model_kwargs": "{}"}, fc, {}) == {}
    with pytest.raises(SaebenchError, match="--saebench-model-kwargs .*not JSON"):
        model_kwargs({"saebench_model_kwargs": "fold_ln=1"}, fc, {})
    with pytest.raises(SaebenchError, match=r"model-kwargs\]: expected a table"):
        model_kwargs({}, FileConfig(None, {"model-kwargs": [1]}, "pyproject.toml "
                                    "[tool.pytest-saebench]"), {})
    with pytest.raises(SaebenchError, match="'dtype' is set by the run; use --saebench-dtype"):
        model_kwargs({"saebench_model_kwargs": '{"dtype": "float16"}'}, fc, {})


def test_the_cache_key_changes_with_how_the_model_loads(monkeypatch, tiny_world):
    from pytest_saebench.config import Settings
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.model import load_local_model
    from pytest_saebench.runner import Runner

    monkeypatch.setattr("pytest_saebench.loading.model.load_model",
                        lambda *a, **k: load_local_model(tiny_world.model_dir, "cpu", "float32"))
    keys = []
    for kwargs in ({}, {"fold_ln": True}):
        settings = Settings(sae_paths=(str(tiny_world.trained),), model="gpt2",
                            model_kwargs=kwargs)
        runner = Runner(settings, discover(tiny_world.trained), {}, None)
        keys.append(runner._model_key(runner.model_for("trained")))
    assert keys[0] != keys[1] and "'fold_ln', True" in keys[1]


@pytest.mark.parametrize("cls, expected", [
    ("AutoModelForCausalLM", "model_class_name 'AutoModelForCausalLM' is not supported"),
    ("HookedMamba", "model_class_name 'HookedMamba' is not supported"),
])
def test_model_classes_other_than_hooked_transformer_are_refused_at_load(tmp_path, cls,
                                                                         expected):
    from pytest_saebench.loading.schema import validate_cfg

    cfg = {"d_in": 4, "d_sae": 8, "metadata": {"hook_name": HOOK, "model_class_name": cls}}
    with pytest.raises(SaebenchError, match=expected):
        validate_cfg(tmp_path / "cfg.json", cfg)
    cfg["metadata"] = {"hook_name": HOOK, "sequence_separator_token": "newline"}
    with pytest.raises(SaebenchError, match="'sequence_separator_token' must be bos, eos, sep"):
        validate_cfg(tmp_path / "cfg.json", cfg)


# -- pretokenized datasets --------------------------------------------------------------------
class _Tok:
    bos_token_id, eos_token_id = 0, 0


def _pretokenized(tmp_path, rows):
    path = tmp_path / "tokens"
    datasets.Dataset.from_dict({"input_ids": rows}).save_to_disk(str(path))
    return str(path)


def test_pretokenized_rows_are_windows_cut_to_the_context(tmp_path):
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    rows = [[0, *range(10 * i + 1, 10 * i + 8)] for i in range(12)]
    source = load_text_dataset(_pretokenized(tmp_path, rows))
    assert source.pretokenized and source.column == "input_ids" and source.streamed
    out = token_windows(_Tok(), source, 5, 6, True, seed=3, d_vocab=200)
    order = [list(r) for r in source.rows(seed=3)]
    assert out.tolist() == [r[:6] for r in order[:5]]  # used as they are, BOS included
    assert sorted(map(tuple, order)) == sorted(map(tuple, rows))


def test_pretokenized_sets_that_do_not_fit_say_so(tmp_path):
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    source = load_text_dataset(_pretokenized(tmp_path, [[0, 5, 300, 7]] * 4))
    with pytest.raises(SaebenchError, match="holds token id 300 but the model's vocabulary "
                                            "has 100 ids; it was tokenized for another model"):
        token_windows(_Tok(), source, 2, 4, True, seed=0, d_vocab=100)
    with pytest.raises(SaebenchError, match="rows of 4 tokens are shorter than the "
                                            "checkpoint's context_size 8"):
        token_windows(_Tok(), source, 2, 8, True, seed=0, d_vocab=400)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": ["a", "b"]}) + "\n")
    with pytest.raises(SaebenchError, match="column 'tokens' must hold lists of token ids"):
        load_text_dataset(str(tmp_path / "bad.jsonl"))


# -- mid-training SAELens checkpoints ---------------------------------------------------------
def _training_checkpoint(path, architecture="standard", norm="expected_average_only_in",
                         factor: float | None = 0.25, whiten=False, seed=0):
    """What SAETrainer.save_checkpoint writes: the training SAE's save_model and the
    ActivationScaler's file."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
    from sae_lens.training.activation_scaler import ActivationScaler

    torch.manual_seed(seed)
    sae_cls, cfg_cls = SAE_TRAINING_CLASS_REGISTRY[architecture]
    extra = {"k": 4} if "topk" in architecture else {}
    sae = sae_cls(cfg_cls(d_in=16, d_sae=32, normalize_activations=norm, **extra))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sae.cfg.metadata.hook_name = HOOK
    sae.cfg.metadata.model_name = "saebench-reference"
    sae.save_model(str(path))
    scaler = ActivationScaler(scaling_factor=factor)
    if whiten:
        data = iter([torch.randn(256, 16) * 3 + 1 for _ in range(4)])
        scaler.estimate_whitening(16, data, n_batches_for_norm_estimate=4)
    scaler.save(str(path / "activation_scaler.json"))
    return sae, scaler


@pytest.mark.parametrize("architecture, norm, whiten", [
    ("standard", "expected_average_only_in", False),
    ("topk", "expected_average_only_in", False),
    ("standard", "covariance_whitening", True),
])
def test_mid_training_checkpoints_fold_as_the_trainer_does(tmp_path, architecture, norm,
                                                           whiten):
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    factor = None if whiten else 0.25
    trained, scaler = _training_checkpoint(tmp_path / "ckpt", architecture, norm, factor, whiten)
    (ref,) = discover(tmp_path / "ckpt")
    loaded = load_sae(ref, "cpu")
    x = torch.randn(64, 16) * 4 + 2
    with torch.no_grad():  # the training SAE on scaled input, its output scaled back
        expected = scaler.unscale(trained.decode(trained.encode(scaler.scale(x))))
        got = loaded.reconstruct(x)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    record = loaded.record()
    assert record["format"] == "SAELens training checkpoint"
    assert record["path"] == str(tmp_path / "ckpt")
    folded = record["activation_scaling_folded"]
    assert folded["normalize_activations"] == norm and folded["whitening"] is whiten
    assert folded["scaling_factor"] == factor


def test_a_batchtopk_training_checkpoint_becomes_its_inference_sae(tmp_path):
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    _training_checkpoint(tmp_path / "ckpt", "batchtopk", norm="none", factor=None)
    (ref,) = discover(tmp_path / "ckpt")
    assert load_sae(ref, "cpu").architecture == "jumprelu"
    assert ref.meta["saebench_folded"]["training_architecture"] == "batchtopk"


@pytest.mark.parametrize("change, message", [
    ("no file", "normalize_activations='expected_average_only_in' but there is no "
                "activation_scaler.json beside it"),
    ("null", "'scaling_factor' is null"),
    ("negative", "'scaling_factor' must be a positive number or null, got -1"),
])
def test_a_scaler_that_cannot_be_folded_is_one_line(tmp_path, change, message):
    from pytest_saebench.loading.checkpoints import discover

    _training_checkpoint(tmp_path / "ckpt")
    scaler = tmp_path / "ckpt" / "activation_scaler.json"
    if change == "no file":
        scaler.unlink()
    else:
        scaler.write_text(json.dumps({"scaling_factor": None if change == "null" else -1,
                                      "has_whitening": False}))
    with pytest.raises(SaebenchError, match=message) as info:
        discover(tmp_path / "ckpt")
    assert "\n" not in str(info.value)


def test_a_new_scaler_is_a_new_checkpoint(tmp_path):
    from pytest_saebench.loading.checkpoints import discover

    _training_checkpoint(tmp_path / "ckpt")
    first = discover(tmp_path / "ckpt")[0].sha256
    (tmp_path / "ckpt" / "activation_scaler.json").write_text(
        json.dumps({"scaling_factor": 0.5, "has_whitening": False}))
    assert discover(tmp_path / "ckpt")[0].sha256 != first
