"""dictionary_learning and raw safetensors checkpoints convert to the same SAE: identical
core metrics, clear errors for missing keys, and nothing but tensors is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading.checkpoints import discover
from tests.conftest import CONTEXT, HOOK
from tests.helpers import make_runner


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "sae_weights.safetensors"))


def _dictionary_learning(world, src: Path, out: Path, cls: str, k: int | None = None) -> Path:
    w = _weights(src)
    if cls == "AutoEncoder":
        state = {"encoder.weight": w["W_enc"].T.clone(), "encoder.bias": w["b_enc"],
                 "decoder.weight": w["W_dec"].T.clone(), "bias": w["b_dec"]}
    else:
        state = {"encoder.weight": w["W_enc"].T.clone(), "encoder.bias": w["b_enc"],
                 "decoder.weight": w["W_dec"].T.clone(), "b_dec": w["b_dec"],
                 "k": torch.tensor(k)}
    out.mkdir(parents=True)
    torch.save(state, out / "ae.pt")
    trainer = {"dict_class": cls, "activation_dim": w["W_enc"].shape[0],
               "dict_size": w["W_enc"].shape[1], "lm_name": str(world.model_dir),
               "submodule_name": "resid_post_layer_0", "layer": 0}
    if k is not None:
        trainer["k"] = k
    (out / "config.json").write_text(json.dumps({"trainer": trainer,
                                                 "buffer": {"ctx_len": CONTEXT}}))
    return out


def _raw(world, src: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    save_file(_weights(src), str(out / "my_sae.safetensors"))
    (out / "my_sae.json").write_text(json.dumps({
        "d_in": int(_weights(src)["W_enc"].shape[0]), "d_sae": int(_weights(src)["W_enc"].shape[1]),
        "hook_name": HOOK, "model_name": str(world.model_dir), "context_size": CONTEXT}))
    return out


def _core(path: Path, world) -> dict:
    runner = make_runner(path, dataset=str(world.corpus))
    return runner.results(next(iter(runner.checkpoints))).evals["core"].metrics


def test_dictionary_learning_and_raw_give_identical_metrics(tiny_world, tmp_path):
    original = _core(tiny_world.trained, tiny_world)
    dl = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "dl", "AutoEncoder")
    raw = _raw(tiny_world, tiny_world.trained, tmp_path / "raw")
    assert _core(dl, tiny_world) == original
    assert _core(raw, tiny_world) == original
    # a raw checkpoint can also be named by its .safetensors file
    assert _core(raw / "my_sae.safetensors", tiny_world) == original


def test_dictionary_learning_topk_round_trips(tiny_world, tmp_path):
    original = _core(tiny_world.topk, tiny_world)
    dl = _dictionary_learning(tiny_world, tiny_world.topk, tmp_path / "dl", "AutoEncoderTopK",
                              k=8)
    assert _core(dl, tiny_world) == original


def test_dictionary_learning_sweep_ids(tiny_world, tmp_path):
    for i in range(2):
        _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "sweep" / f"trainer_{i}",
                             "AutoEncoder")
    refs = discover(tmp_path / "sweep")
    assert [r.id for r in refs] == ["sweep/trainer_0", "sweep/trainer_1"]
    assert refs[0].hook_name == HOOK and refs[0].context_size == CONTEXT


def test_missing_tensor_names_file_and_key(tiny_world, tmp_path):
    dl = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "dl", "AutoEncoder")
    state = torch.load(dl / "ae.pt", weights_only=True)
    del state["encoder.bias"]
    torch.save(state, dl / "ae.pt")
    with pytest.raises(SaebenchError, match=r"ae\.pt: missing tensor 'encoder\.bias' that "
                                            "AutoEncoder needs"):
        discover(dl)
    raw = _raw(tiny_world, tiny_world.trained, tmp_path / "raw")
    cfg = json.loads((raw / "my_sae.json").read_text())
    del cfg["hook_name"]
    (raw / "my_sae.json").write_text(json.dumps(cfg))
    with pytest.raises(SaebenchError, match=r"my_sae\.json: missing key\(s\) hook_name"):
        discover(raw)


class Payload:
    """Any object in a pickle: loading it must be refused, never executed."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_objects_are_refused(tiny_world, tmp_path, capsys):
    dl = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "dl", "AutoEncoder")
    state = torch.load(dl / "ae.pt", weights_only=True)
    torch.save({**state, "extra": Payload()}, dl / "ae.pt")
    with pytest.raises(SaebenchError, match="weights_only=True and never unpickles objects"):
        discover(dl)
    assert "unpickled!" not in capsys.readouterr().out


def test_unknown_dictionary_class(tiny_world, tmp_path):
    dl = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "dl", "AutoEncoder")
    cfg = json.loads((dl / "config.json").read_text())
    cfg["trainer"]["dict_class"] = "GatedAutoEncoderV9"
    (dl / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SaebenchError, match="dict_class 'GatedAutoEncoderV9' is not supported"):
        discover(dl)


def _fake_hf_cache(home: Path, sae_dir: Path) -> None:
    """The layout huggingface_hub reads offline: refs/main -> snapshots/<commit>/<files>."""
    repo = home / "hub" / "models--ctigges--pythia-70m-deduped__res-sm_processed"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit / "0-res-sm"
    folder.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        (folder / name).write_bytes((sae_dir / name).read_bytes())
    d_sae = json.loads((sae_dir / "cfg.json").read_text())["d_sae"]
    save_file({"sparsity": torch.zeros(d_sae)}, str(folder / "sparsity.safetensors"))


def _broken_dl_config_list(dl: Path) -> None:
    (dl / "config.json").write_text("[1, 2]")


def _broken_dl_bare_tensor(dl: Path) -> None:
    torch.save(torch.zeros(3), dl / "ae.pt")


def _broken_dl_dict_size(dl: Path) -> None:
    cfg = json.loads((dl / "config.json").read_text())
    cfg["trainer"]["dict_size"] += 1
    (dl / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("break_it, file, message", [
    (_broken_dl_config_list, "config.json", "expected a JSON object, got list"),
    (_broken_dl_bare_tensor, "ae.pt", "expected a state dict of tensors named by strings, got "
                                      "Tensor"),
    (_broken_dl_dict_size, "ae.pt", "has shape"),
])
def test_broken_dictionary_learning_names_the_users_file(tiny_world, tmp_path, break_it, file,
                                                         message):
    dl = _dictionary_learning(tiny_world, tiny_world.trained, tmp_path / "dl", "AutoEncoder")
    break_it(dl)
    with pytest.raises(SaebenchError) as info:
        discover(dl)
    text = str(info.value)
    assert text.startswith(str(dl / file)) and message in text, text
    assert "saebench-converted" not in text  # never the temporary converted copy


def test_broken_raw_checkpoints_are_one_line(tiny_world, tmp_path):
    raw = _raw(tiny_world, tiny_world.trained, tmp_path / "raw")
    good = (raw / "my_sae.safetensors").read_bytes()
    (raw / "my_sae.safetensors").write_bytes(good[:100])
    with pytest.raises(SaebenchError, match=r"my_sae\.safetensors: corrupt or truncated"):
        discover(raw)
    (raw / "my_sae.safetensors").write_bytes(good)
    cfg = json.loads((raw / "my_sae.json").read_text())
    (raw / "my_sae.json").write_text(json.dumps({**cfg, "architecture": "topk"}))
    with pytest.raises(SaebenchError, match=r"my_sae\.json: architecture 'topk' needs 'k'"):
        discover(raw)
    (raw / "my_sae.json").write_text(json.dumps({**cfg, "d_sae": "128"}))
    with pytest.raises(SaebenchError, match=r"my_sae\.json: 'd_sae' must be an integer"):
        discover(raw)


MANY = """
import json, sys
from safetensors.torch import load_file
from pytest_saebench.loading.checkpoints import discover
from pytest_saebench.errors import SaebenchError
theirs = load_file(sys.argv[1] + "/sae_weights.safetensors")
for spec in sys.argv[2:]:
    try:
        refs = discover(spec)
    except SaebenchError as exc:
        print(json.dumps({"error": str(exc)}))
        continue
    ours = load_file(str(refs[0].path / "sae_weights.safetensors"))
    same = all(bool((ours[k] == theirs[k]).all()) for k in theirs)
    print(json.dumps({"id": refs[0].id, "hook": refs[0].hook_name, "n": len(refs),
                      "d_in": refs[0].cfg["d_in"], "path": str(refs[0].path), "same": same}))
"""


def test_sae_lens_and_hf_specs_from_the_local_cache(tiny_world, tmp_path):
    """A release, a Hub repo id as release, hf: with and without a path, all from one local
    cache offline (one process: sae_lens's release table takes ~15 s to read); what is not
    cached fails in one line with the command that fetches it."""
    import os
    import subprocess
    import sys

    _fake_hf_cache(tmp_path / "hf", tiny_world.trained)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    repo = "ctigges/pythia-70m-deduped__res-sm_processed"
    release = "pythia-70m-deduped-res-sm"
    specs = {f"sae_lens:{release}/blocks.0.hook_resid_post":
             f"{release}/blocks.0.hook_resid_post",
             f"sae_lens:{repo}/0-res-sm": f"{repo}/0-res-sm",
             f"hf:{repo}/0-res-sm": f"{repo}/0-res-sm", f"hf:{repo}": f"{repo}/0-res-sm",
             f"sae_lens:{release}/blocks.1.hook_resid_post": None,
             "hf:someone/not-cached/layer_3": None}
    out = subprocess.run([sys.executable, "-c", MANY, str(tiny_world.trained), *specs],
                         env=env, capture_output=True, text=True, timeout=300)
    found = [json.loads(line) for line in out.stdout.strip().splitlines()[-len(specs):]]
    d_in = _weights(tiny_world.trained)["W_enc"].shape[0]
    for (spec, want), got in zip(specs.items(), found, strict=True):
        if want is not None:
            assert (got.get("id"), got.get("hook"), got.get("n"), got.get("same"),
                    got.get("d_in")) == (want, HOOK, 1, True, d_in), (spec, got)
            if spec.startswith("sae_lens:"):  # its converted copy is removed at exit
                assert not Path(got["path"]).exists()
    release_error, hf_error = found[-2]["error"], found[-1]["error"]
    assert release_error.startswith(f"--sae-path sae_lens:{release}/blocks.1")
    assert "must already be in the local Hugging Face cache" in release_error
    assert ("fetch it once with: HF_HUB_OFFLINE=0 python -c \"from sae_lens import SAE; "
            f"SAE.from_pretrained('{release}', 'blocks.1.hook_resid_post')") in release_error
    assert hf_error.startswith("--sae-path hf:someone/not-cached/layer_3: repository "
                               "someone/not-cached is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE=0 hf download someone/not-cached --include 'layer_3/*'" in hf_error


def test_sae_lens_release_is_split_as_sae_lens_reads_it():
    from pytest_saebench.loading.hub import fetch_command, split_release

    known = {"gemma-scope-2b-pt-res", "pythia-70m-deduped-res-sm"}
    assert split_release("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82", known) == (
        "gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")
    assert split_release("ctigges/pythia-70m-deduped__res-sm_processed/3-res-sm", known) == (
        "ctigges/pythia-70m-deduped__res-sm_processed", "3-res-sm")
    with pytest.raises(SaebenchError, match="did you mean 'pythia-70m-deduped-res-sm'"):
        split_release("pythia-70m-dedup-res-sm/blocks.3.hook_resid_post", known)
    assert fetch_command("r", "a/b") == ("HF_HUB_OFFLINE=0 python -c \"from sae_lens import "
                                         "SAE; SAE.from_pretrained('r', 'a/b')\"")
