"""More bad input, each one line at the boundary it enters (issue 28's cases)."""

from __future__ import annotations

import json

import pytest

from pytest_saebench.errors import SaebenchError

HOOK = "blocks.2.hook_resid_post"


def _cfg(**meta):
    return {"d_in": 4, "d_sae": 8, "metadata": {"hook_name": HOOK, **meta}}


def test_hook_layer_below_the_hooks_own_layer_is_refused_at_load(tmp_path):
    from pytest_saebench.loading.schema import validate_cfg

    with pytest.raises(SaebenchError, match="metadata.hook_layer = 0 but hook_name "
                                            "'blocks.2.hook_resid_post' is in layer 2"):
        validate_cfg(tmp_path / "cfg.json", _cfg(hook_layer=0))
    validate_cfg(tmp_path / "cfg.json", _cfg(hook_layer=2))
    validate_cfg(tmp_path / "cfg.json", _cfg(hook_layer=3))  # later: activations still exist


@pytest.mark.parametrize("arch", ["matching_pursuit", "temporal"])
def test_architectures_without_an_encode_decode_reconstruction_are_one_line(tmp_path, arch):
    from pytest_saebench.loading.schema import validate_cfg

    with pytest.raises(SaebenchError, match=f"architecture '{arch}' is not supported: "):
        validate_cfg(tmp_path / "cfg.json", {**_cfg(), "architecture": arch})


def test_an_invalid_hub_repository_id_says_so():
    from pytest_saebench.loading.hub import cached_repo_path

    with pytest.raises(SaebenchError, match="'bad owner/na:me' is not a valid Hugging Face "
                                            "repository id") as info:
        cached_repo_path("hf:bad owner/na:me")
    assert "hf download" not in str(info.value)


def _shard(tmp_path, name: str) -> str:
    from pytest_saebench.results import SCHEMA_VERSION

    path = tmp_path / name
    path.write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "tool": "pytest-saebench", "version": "x",
        "suite": "fast", "eval_id": "e", "saes": {}, "checks": [],
        "run": {"eval_configs": {}, "model": "auto", "dataset": "auto", "seed": 42,
                "dtype": "float32", "shard": None}}))
    return str(path)


def test_merge_into_a_directory_is_one_line_before_anything_is_read(tmp_path, capsys):
    from pytest_saebench.cli import main

    (tmp_path / "out").mkdir()
    assert main(["merge", _shard(tmp_path, "a.json"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"merge -o {tmp_path / 'out'}: is a directory" in err and "Traceback" not in err


def test_ctrl_c_during_merge_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from pytest_saebench import sharding
    from pytest_saebench.cli import main

    def interrupted(paths):
        raise KeyboardInterrupt

    monkeypatch.setattr(sharding, "merge", interrupted)
    out = tmp_path / "merged.json"
    out.write_text("old")
    assert main(["merge", _shard(tmp_path, "a.json"), "-o", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "merge: interrupted; nothing was written"
    assert out.read_text() == "old"


def test_an_eval_named_outside_the_suite_runs_with_that_suites_preset():
    from pytest_saebench.evals import get_eval
    from pytest_saebench.suites import SUITES, eval_configs

    assert "sparse_probing_sae_probes" not in SUITES["fast"]
    configs = eval_configs("fast", select=("sparse_probing_sae_probes", "meta_structure"))
    assert list(configs) == ["meta_structure", "sparse_probing_sae_probes"]
    assert configs["sparse_probing_sae_probes"] == \
        get_eval("sparse_probing_sae_probes").PRESETS["fast"]


def test_dictionary_learning_without_its_config_says_so(tmp_path):
    from pytest_saebench.loading.checkpoints import discover

    (tmp_path / "trainer_0").mkdir()
    (tmp_path / "trainer_0" / "ae.pt").write_bytes(b"weights")
    with pytest.raises(SaebenchError, match="ae.pt is a dictionary_learning SAE, but its "
                                            "trainer's config.json is missing") as info:
        discover(tmp_path / "trainer_0")
    assert "Goodfire" not in str(info.value)


def test_keys_a_newer_sae_lens_wrote_are_named_once(tiny_world, tmp_path, recwarn):
    import shutil

    from pytest_saebench.errors import SaebenchWarning
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    for name in ("a", "b"):
        ckpt = shutil.copytree(tiny_world.trained, tmp_path / name)
        cfg = json.loads((ckpt / "cfg.json").read_text())
        cfg["metadata"]["sae_lens_version"] = "9.0.0"
        cfg["future_option"] = 3
        (ckpt / "cfg.json").write_text(json.dumps(cfg))
        load_sae(discover(ckpt)[0], "cpu")
    said = [w for w in recwarn if issubclass(w.category, SaebenchWarning)]
    assert len(said) == 1
    assert "key(s) future_option (written by sae_lens 9.0.0) are not ones sae_lens" in \
        str(said[0].message)


def test_errors_and_results_name_the_users_files_not_a_converted_copy(tiny_world, tmp_path):
    from pytest_saebench.loading.checkpoints import discover
    from tests.test_formats import _dictionary_learning

    folder = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "trainer_0",
                                  "AutoEncoder")
    (ref,) = discover(folder)
    assert ref.shown_path == str(folder) and "saebench-converted" not in ref.where()
    assert ref.where() == f"{folder} (dictionary_learning checkpoint)"
