"""Issue 14's list, one case each: broken checkpoints are refused at discovery/loading with one
line naming the file and the key; broken options are usage errors before anything is
evaluated, and no output file changes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pytest_saebench.errors import SaebenchError
from tests.conftest import SMALL_PYPROJECT


def _cfg_edit(key_path: str, value):
    def edit(cfg: dict) -> None:
        *parents, last = key_path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


CFG_CASES = {
    "d_sae a string": (_cfg_edit("d_sae", "128"), "'d_sae' must be an integer"),
    "d_sae null": (_cfg_edit("d_sae", None), "missing key(s) d_sae"),
    "metadata not a table": (_cfg_edit("metadata", [1, 2]), "'metadata' must be an object"),
    "k larger than d_sae": (_cfg_edit("k", 500), "'k' = 500 is larger than d_sae = 128"),
    "k negative": (_cfg_edit("k", -1), "'k' must be an integer >= 1"),
    "k missing for topk": (lambda cfg: cfg.pop("k"), "needs 'k'"),
    "context_size 0": (_cfg_edit("metadata.context_size", 0), "'context_size' must be an "
                                                              "integer >= 1"),
    "hook_name a number": (_cfg_edit("metadata.hook_name", 3), "'hook_name' must be a string"),
}


def _load(path):
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    return [load_sae(ref, "cpu") for ref in discover(path)]


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and exc.value.__cause__ is None, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("case", list(CFG_CASES))
def test_broken_cfg_json(tiny_world, tmp_path, case):
    edit, message = CFG_CASES[case]
    ckpt = shutil.copytree(tiny_world.topk, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "cfg.json").read_text())
    edit(cfg)
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaebenchError) as exc:
        _load(ckpt)
    _one_line(exc, str(ckpt / "cfg.json"), message)


def test_cfg_json_not_utf8_or_a_directory(tiny_world, tmp_path):
    ckpt = shutil.copytree(tiny_world.trained, tmp_path / "ckpt")
    (ckpt / "cfg.json").write_bytes(b'{"d_in": "\xff\xfe"}')
    with pytest.raises(SaebenchError) as exc:
        _load(ckpt)
    _one_line(exc, "cfg.json", "not UTF-8")
    (ckpt / "cfg.json").unlink()
    (ckpt / "cfg.json").mkdir()
    with pytest.raises(SaebenchError) as exc:
        _load(ckpt)
    _one_line(exc, "cfg.json")


@pytest.mark.parametrize("damage, message", [
    ("drop W_dec", "tensor 'W_dec' is missing"),
    ("empty b_dec", "tensor 'b_dec' has size zero"),
])
def test_broken_tensors_name_the_tensor(tiny_world, tmp_path, damage, message):
    ckpt = shutil.copytree(tiny_world.trained, tmp_path / "ckpt")
    weights = ckpt / "sae_weights.safetensors"
    state = load_file(str(weights))
    if damage == "drop W_dec":
        del state["W_dec"]
    else:
        state["b_dec"] = torch.zeros(0)
    save_file(state, str(weights))
    with pytest.raises(SaebenchError) as exc:
        _load(ckpt)
    _one_line(exc, str(weights), message)


def test_dictionary_learning_config_a_list(tiny_world, tmp_path):
    ckpt = tmp_path / "dl"
    ckpt.mkdir()
    torch.save({"encoder.weight": torch.zeros(4, 2)}, ckpt / "ae.pt")
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(SaebenchError) as exc:
        _load(ckpt)
    _one_line(exc, str(ckpt / "config.json"), "expected a JSON object, got list")


EVALS_CORE = "[tool.pytest-saebench.evals.core]"
USAGE_CASES = {
    "threshold with two dots": (["--saebench-threshold=l0>=1.2.3"], {}, "--saebench-threshold"),
    "device gpu": (["--saebench-device=gpu"], {}, "--saebench-device"),
    "results path a directory": (["--saebench-json=adir"], {}, "adir"),
    "cache dir a file": (["--saebench-cache-dir=afile"], {}, "afile"),
    "negative cache size": ([], {"cache-size-mb": "-1"}, "cache-size-mb"),
    "budget 0": ([], {"n_eval_reconstruction_batches": "0"}, "n_eval_reconstruction_batches"),
    "negative budget": ([], {"n_eval_sparsity_variance_batches": "-2"},
                        "n_eval_sparsity_variance_batches"),
    "batch size 0": ([], {"batch_size_prompts": "0"}, "batch_size_prompts"),
    "baseline missing": (["--saebench-baseline=nope.json"], {}, "nope.json"),
}


def _pyproject(overrides: dict[str, str]) -> str:
    """SMALL_PYPROJECT with ``overrides`` replacing (core budgets) or joining (top level)."""
    lines, section = [], ""
    for line in SMALL_PYPROJECT.strip().splitlines():
        section = line if line.startswith("[") else section
        key = line.split("=")[0].strip()
        if section == EVALS_CORE and key in overrides:
            line = f"{key} = {overrides[key]}"
        lines.append(line)
        if line == "[tool.pytest-saebench]":
            lines += [f"{k} = {v}" for k, v in overrides.items() if "_" not in k]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_bad_options_are_usage_errors_before_evaluation(pytester, tiny_world, case):
    args, overrides, named = USAGE_CASES[case]
    (pytester.path / "adir").mkdir()
    (pytester.path / "afile").write_text("x")
    pytester.makefile(".toml", pyproject=_pyproject(overrides))
    before = {p: p.read_bytes() for p in pytester.path.rglob("*") if p.is_file()}
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", *args,
                                "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and named in errors[0], result.errlines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    after = {p: p.read_bytes() for p in pytester.path.rglob("*") if p.is_file()}
    assert after == before


def test_cuda_without_a_gpu_blames_the_option(pytester, tiny_world, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-device=cuda",
                                "-p", "no:cacheprovider")
    text = result.stdout.str() + result.stderr.str()
    assert result.ret != 0 and "--saebench-device" in text and "cfg.json" not in text, text
    assert "Traceback" not in text
