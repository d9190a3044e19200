"""Fuzzing the two inputs users write by hand, cfg.json and the pyproject table: every
mutation is either valid (it loads) or refused with one line naming the file or key, never
an exception from inside a library, and an invalid one never changes an output file."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_saebench.errors import SaebenchError

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(),
                 st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=6),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                      st.integers(), max_size=1))


def _is_count(value, low: int = 1, high: float = math.inf) -> bool:
    return type(value) is int and low <= value <= high


@st.composite
def cfg_mutation(draw, base: dict) -> tuple[dict, bool]:
    """A mutated copy of ``base`` (a TopK cfg.json) and whether it should load."""
    cfg = json.loads(json.dumps(base))
    meta = cfg["metadata"]
    key = draw(st.sampled_from(["d_in", "d_sae", "k", "architecture", "metadata",
                                "context_size", "hook_name", "drop"]))
    if key == "drop":
        gone = draw(st.sampled_from(["d_in", "d_sae", "k", "metadata"]))
        del cfg[gone]
        return cfg, False
    value = draw(JUNK if key != "k" else st.one_of(JUNK, st.integers(-3, 200)))
    if key in ("d_in", "d_sae"):
        valid = value == base[key] and type(value) is int
        cfg[key] = value
    elif key == "k":
        valid = _is_count(value, 1, base["d_sae"])
        cfg[key] = value
    elif key == "architecture":
        value = draw(st.one_of(st.sampled_from(["topk", "batchtopk"]), JUNK))
        valid = value == "topk"  # sae_lens saves BatchTopK for inference as jumprelu
        cfg[key] = value
    elif key == "metadata":
        valid = False  # without the metadata table there is no hook name
        cfg[key] = value if not isinstance(value, dict) else {}
    elif key == "context_size":
        valid = value is None or _is_count(value)
        meta[key] = value
    else:  # a hook name the model may lack is checked when the model is loaded
        valid = isinstance(value, str) and bool(value)
        meta[key] = value
    return cfg, valid


def _assert_one_line(exc: SaebenchError, *names: str) -> None:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    assert any(n in text for n in names), text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_cfg_json_loads_or_names_the_problem(tiny_world, data):
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.sae import load_sae

    base = json.loads((tiny_world.topk / "cfg.json").read_text())
    cfg, valid = data.draw(cfg_mutation(base))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        shutil.copytree(tiny_world.topk, ckpt)
        (ckpt / "cfg.json").write_text(json.dumps(cfg))
        try:
            for ref in discover(ckpt):
                load_sae(ref, "cpu")
        except SaebenchError as exc:
            assert not valid, f"valid cfg refused: {exc}"
            _assert_one_line(exc, "cfg.json", "sae_weights.safetensors")
        else:
            assert valid, f"invalid cfg accepted: {cfg}"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    return json.dumps(value)


@st.composite
def table_mutation(draw) -> tuple[str, bool]:
    """One ``[tool.pytest-saebench]`` setting (as TOML) and whether it is valid."""
    scalar = st.one_of(st.integers(-3, 100), st.floats(), st.booleans(),
                       st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=6))
    kind = draw(st.sampled_from(["seed", "repeats", "cache-size-mb", "suite", "device",
                                 "min", "budget", "batch"]))
    if kind == "suite":
        value = draw(st.one_of(st.sampled_from(["fast", "standard"]), scalar))
        return f"suite = {_toml(value)}\n", value in ("fast", "standard")
    if kind == "device":
        value = draw(st.one_of(st.sampled_from(["cpu", "auto", "gpu", "cuda:x"]), scalar))
        return f"device = {_toml(value)}\n", value in ("cpu", "auto")
    value = draw(scalar)
    if kind in ("seed", "repeats", "cache-size-mb"):
        low = {"seed": -math.inf, "repeats": 1, "cache-size-mb": 0}[kind]
        return f"{kind} = {_toml(value)}\n", type(value) is int and value >= low
    if kind == "min":
        ok = type(value) in (int, float) and math.isfinite(value)
        return (f'[tool.pytest-saebench.thresholds]\n"core.sparsity.l0" = '
                f"{{ min = {_toml(value)} }}\n", ok)
    field = "n_eval_reconstruction_batches" if kind == "budget" else "batch_size_prompts"
    return (f"[tool.pytest-saebench.evals.core]\n{field} = {_toml(value)}\n",
            type(value) is int and value >= 1)


@settings(max_examples=80, deadline=None)
@given(table_mutation())
def test_mutated_pyproject_table_is_valid_or_a_usage_error(mutation):
    from pytest_saebench.config import build_settings, read_file_config
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.suites import check_suite, eval_configs

    text, valid = mutation
    registry = metric_registry()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pyproject.toml").write_text(f"[tool.pytest-saebench]\n{text}")
        fc = read_file_config(Path(tmp))
        try:
            s = build_settings({"sae_path": ["ckpt"]}, fc, {}, registry.resolve,
                               lambda m: registry[m].default_severity)
            check_suite(s.suite)
            eval_configs(s.suite, dict(s.eval_overrides), fc.section_label("evals"))
        except SaebenchError as exc:
            assert not valid, f"valid setting refused: {text!r}: {exc}"
            _assert_one_line(exc, "pyproject.toml", "device", "cache-size-mb", "repeats",
                             "seed", "suite")
        else:
            assert valid, f"invalid setting accepted: {text!r}"


@pytest.mark.parametrize("setting", [
    '"core.sparsity.l0" = { min = nan }',
    '"core.reconstruction_quality.explained_variance" = { max = inf }',
])
def test_an_invalid_run_is_one_line_and_changes_no_file(pytester, tiny_world, setting):
    results = pytester.path / "saebench-results.json"
    results.write_text('{"old": true}\n')
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n{setting}\n")
    run = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in run.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "finite" in errors[0], run.errlines
    assert "Traceback" not in run.stdout.str() + run.stderr.str()
    assert results.read_text() == '{"old": true}\n'
