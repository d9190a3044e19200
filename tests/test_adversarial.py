"""Nothing of the user's lost, nothing injected (issue 43): the results writer deletes only
files it can prove it wrote; names go into workflow commands and markdown escaped; a requested
output that was not written fails the run; a symlinked baseline is written through; ``hf:``
stays in the Hub cache; a symlink loop evaluates each checkpoint once; tampered baselines are
refused in one line."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from pytest_saebench.errors import SaebenchError
from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"


def _sweep(root, trained, names=("k8", "k16", "k64")):
    for name in names:
        shutil.copytree(trained, root / "sweep" / name)
    return root / "sweep"


def test_the_results_writer_never_deletes_a_file_it_did_not_write(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    sweep = _sweep(pytester.path, tiny_world.trained)
    # results named after the sweep folder: their SAEBench files' folder is the sweep itself
    done = pytester.runpytest(f"--sae-path={sweep / 'k16'}", "--saebench-json=sweep.json")
    assert done.ret == 0, done.stdout.str()[-2000:]
    for name in ("k8", "k16", "k64"):
        for f in ("cfg.json", "sae_weights.safetensors"):
            assert (sweep / name / f).is_file(), (name, f)
    # what it wrote it may replace: a second run with another checkpoint removes the first
    # run's SAEBench file (listed in its manifest, carrying its marker), keeps everything else
    mine = sorted((sweep / "core").glob("*.json"))
    assert [p.name for p in mine] == ["k16_custom_sae_eval_results.json"]
    (sweep / "core" / "notes.json").write_text('{"mine": true}')
    done = pytester.runpytest(f"--sae-path={sweep / 'k64'}", "--saebench-json=sweep.json")
    assert done.ret == 0, done.stdout.str()[-2000:]
    assert sorted(p.name for p in (sweep / "core").glob("*.json")) == [
        "k64_custom_sae_eval_results.json", "notes.json"]
    assert (sweep / "k16" / "cfg.json").is_file()


def test_a_file_of_the_users_in_the_way_of_an_output_is_never_overwritten(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    (pytester.path / "out" / "core").mkdir(parents=True)
    theirs = pytester.path / "out" / "core" / "trained_custom_sae_eval_results.json"
    theirs.write_text('{"not": "ours"}')
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-json=out.json")
    assert done.ret == 1 and theirs.read_text() == '{"not": "ours"}'
    done.stdout.fnmatch_lines(["*results: not written*not written by pytest-saebench*"])


def test_workflow_commands_and_the_step_summary_escape_every_name():
    from pytest_saebench.reporting.github import annotations, summary_markdown

    evil = "u\r::warning file=evil.py,line=1::INJECTED%0A"
    check = {"status": "fail", "sae": evil, "metric": EV, "kind": "threshold", "value": 0.5,
             "stderr": None, "limit": ">= 0.8", "message": f"{EV} = 0.5 < min 0.8 (sae {evil})"}
    lines = annotations([check], {("threshold", EV): "py,proj:ect.toml:3"})
    assert len(lines) == 1 and "\r" not in lines[0] and "\n" not in lines[0]
    assert lines[0].startswith("::error file=py%2Cproj%3Aect.toml,line=3::")
    assert "%0D::warning" in lines[0] and "%250A" in lines[0]  # \r and % escaped
    md_evil = "x](http://evil)<img src=x onerror=alert(1)>|y\nz"
    text = summary_markdown([{**check, "sae": md_evil, "message": f"bad {md_evil}"}],
                            [], "fast")
    # no tag, no link (its bracket escaped), no line break inside a row
    assert "<img" not in text and "](http://evil)" not in text.replace("\\](", "")
    assert "y\nz" not in text

    def cells(line: str) -> int:  # the table cells a renderer sees: unescaped pipes
        return line.count("|") - line.count("\\|")

    header = next(line for line in text.splitlines() if line.startswith("| status |"))
    row = next(line for line in text.splitlines() if "x\\]" in line and "threshold" in line)
    assert cells(row) == cells(header), (row, header)


def test_a_requested_output_that_was_not_written_fails_the_run(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    (pytester.path / "afile").write_text("a file, not a folder")
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                              "--saebench-update-baseline=afile/base.json")
    assert done.ret == 1, done.stdout.str()[-2000:]
    done.stdout.fnmatch_lines(["*a requested output was not written*"])
    assert (pytester.path / "afile").read_text() == "a file, not a folder"


def test_a_symlinked_baseline_is_written_through_the_link(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    (pytester.path / "shared").mkdir()
    (pytester.path / "baselines").mkdir()
    target = pytester.path / "shared" / "main.json"
    target.write_text("")  # a new, empty shared file
    link = pytester.path / "baselines" / "b.json"
    link.symlink_to(os.path.relpath(target, link.parent))
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                              "--saebench-update-baseline=baselines/b.json")
    assert done.ret == 0, done.stdout.str()[-2000:]
    assert link.is_symlink() and json.loads(target.read_text())["tool"] == "pytest-saebench"


@pytest.mark.parametrize("spec", ["hf:acme/saes/../../../../../outside/secret",
                                  "hf:/etc/passwd", "sae_lens:release/../../x"])
def test_hub_specs_stay_inside_the_cache(spec):
    from pytest_saebench.loading.checkpoints import discover

    with pytest.raises(SaebenchError) as exc:
        discover(spec)
    assert "\n" not in str(exc.value) and ("'..'" in str(exc.value) or "absolute" in
                                           str(exc.value)), str(exc.value)


def test_a_symlink_loop_evaluates_each_checkpoint_once_and_a_dangling_link_warns(
        tmp_path, tiny_world):
    from pytest_saebench.loading.checkpoints import discover

    sweep = _sweep(tmp_path, tiny_world.trained, ("a", "b"))
    (sweep / "loop").symlink_to(sweep)
    (sweep / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.warns(UserWarning, match="gone.*dangling symlink"):
        refs = discover(sweep)
    assert sorted(r.id for r in refs) == ["sweep/a", "sweep/b"]


@pytest.mark.parametrize("case", ["nan", "infinite", "truncated"])
def test_a_tampered_baseline_is_refused_at_start_up_in_one_line(pytester, tiny_world, case):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT + "\n[tool.pytest-saebench."
                      f'regression]\n"{EV}" = {{ max_drop = 0.01 }}\n')
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                              "--saebench-update-baseline=base.json")
    assert done.ret == 0
    path = pytester.path / "base.json"
    text = path.read_text()
    value = json.loads(text)["saes"]["trained"]["evals"]["core"]["eval_result_metrics"][
        "reconstruction_quality"]["explained_variance"]
    if case == "truncated":
        path.write_text(text[:len(text) // 2])
    else:
        path.write_text(text.replace(repr(value), "NaN" if case == "nan" else "Infinity", 1))
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-baseline=base.json")
    assert done.ret == 4, done.stdout.str()[-2000:]
    err = [line for line in done.stderr.lines if "base.json" in line]
    assert len(err) == 1 and "Traceback" not in done.stderr.str(), done.stderr.str()[-2000:]


def test_a_baseline_of_a_newer_plugin_warns(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT + "\n[tool.pytest-saebench."
                      f'regression]\n"{EV}" = {{ max_drop = 0.01 }}\n')
    pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-update-baseline=base.json")
    data = json.loads((pytester.path / "base.json").read_text())
    data["version"] = "99.0.0"
    (pytester.path / "base.json").write_text(json.dumps(data))
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-baseline=base.json",
                              "-W", "default")
    assert done.ret == 0
    assert "written by pytest-saebench 99.0.0" in done.stdout.str()
    assert not math.isnan(0.0)


def test_integer_weights_and_an_unknown_dtype_are_refused_in_one_line(tmp_path, tiny_world):
    import torch
    from safetensors.torch import load_file, save_file

    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    ckpt = shutil.copytree(tiny_world.trained, tmp_path / "int8")
    weights = load_file(str(ckpt / "sae_weights.safetensors"))
    weights["W_enc"] = (weights["W_enc"] * 100).to(torch.int8)
    save_file(weights, str(ckpt / "sae_weights.safetensors"))
    with pytest.raises(SaebenchError, match="tensor 'W_enc' is stored as I8, not a floating"):
        [load_sae(ref, "cpu") for ref in discover(ckpt)]
    odd = shutil.copytree(tiny_world.trained, tmp_path / "odd")
    cfg = json.loads((odd / "cfg.json").read_text())
    for dtype in ("float13", "int8"):
        cfg["dtype"] = dtype
        (odd / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(SaebenchError, match=f"'dtype' '{dtype}' is not a floating dtype"):
            discover(odd)


def _two_shards(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n"
                      f'"{EV}" = {{ min = 0.85 }}\n{SMALL_PYPROJECT}')
    sweep = _sweep(pytester.path, tiny_world.trained, ("a", "b"))
    shards = []
    for k in (1, 2):
        out = pytester.path / f"shard-{k}.json"
        done = pytester.runpytest(f"--sae-path={sweep}", f"--saebench-shard={k}/2",
                                  f"--saebench-json={out}")
        assert done.ret == 0, done.stdout.str()[-2000:]
        shards.append(out)
    return shards


def test_merge_refuses_edited_malformed_or_overwritten_shards(pytester, tiny_world, capsys):
    from pytest_saebench.cli import main

    shards = _two_shards(pytester, tiny_world)
    args = ["merge", *map(str, shards), "-o", str(pytester.path / "merged.json")]
    assert main(args) == 0
    good = [p.read_text() for p in shards]
    cases = {
        "checks of the wrong type": lambda d: d.update(checks={"not": "a list"}),
        "a check flipped to pass": lambda d: d["checks"][0].update(status="pass", value=0.1),
        "a value changed": lambda d: d["checks"][0].update(value=0.123),
        "NaN in a shard": None,
    }
    for case, edit in cases.items():
        data = json.loads(good[0])
        text = good[0].replace('"value": ', '"value": NaN, "x": ', 1) if edit is None else None
        if edit is not None:
            edit(data)
            text = json.dumps(data)
        shards[0].write_text(text)
        (pytester.path / "merged.json").unlink(missing_ok=True)
        capsys.readouterr()
        assert main(args) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert not (pytester.path / "merged.json").exists(), case
    shards[0].write_text(good[0])
    assert main(["merge", *map(str, shards), "-o", str(shards[1])]) == 2
    assert "is one of the shards being merged" in capsys.readouterr().err
    assert shards[1].read_text() == good[1]


def test_a_broken_dictionary_learning_file_is_one_line(tmp_path, tiny_world):
    import torch

    from pytest_saebench.loading.checkpoints import discover

    folder = tmp_path / "trainer_0"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"trainer": {
        "dict_class": "AutoEncoder", "activation_dim": 64, "dict_size": 128,
        "lm_name": "m", "submodule_name": "resid_post_layer_0", "layer": 0}}))
    (folder / "ae.pt").write_text("hello, not a pickle")
    with pytest.raises(SaebenchError, match="not a plain tensor state dict") as exc:
        discover(folder)
    assert "\n" not in str(exc.value)
    torch.save({1: torch.zeros(2), "W": torch.zeros(2)}, folder / "ae.pt")
    with pytest.raises(SaebenchError, match="tensors named by strings"):
        discover(folder)


def test_a_cache_that_cannot_be_written_is_one_warning_and_the_run_goes_on(tmp_path,
                                                                          monkeypatch):
    import errno

    import torch

    from pytest_saebench import cache as C

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C, "write_bytes_atomic", full)
    store = C.TensorCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="cache.*cannot be written.*No space left.*"
                                         "--saebench-no-cache"):
        out = store.get("k", {"a": 1}, lambda: {"x": torch.ones(2)})
    assert torch.equal(out["x"], torch.ones(2))
    assert torch.equal(store.get("k", {"a": 1}, lambda: {"x": torch.zeros(2)})["x"],
                       torch.ones(2))  # kept in memory for the run


def test_hub_specs_in_pyproject_are_not_paths_and_adaptive_without_looks_is_said(
        pytester, tiny_world, tmp_path):
    from pytest_saebench.config import FileConfig, sae_paths

    fc = FileConfig(tmp_path / "pyproject.toml", {"sae-path": ["sae_lens:rel/id", "hf:a/b",
                                                               "local"]}, "t")
    assert sae_paths(None, True, fc, {}) == ["sae_lens:rel/id", "hf:a/b",
                                             str((tmp_path / "local").resolve())]
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT.replace(
        'select-evals = ["core"]', 'select-evals = ["synthetic"]'))
    done = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--collect-only",
                              "--saebench-budget=adaptive")
    done.stdout.fnmatch_lines(["*none of this run's evals (synthetic) evaluates in looks*"])
