"""Fuzzing the two inputs users write by hand, cfg.json and the pyproject table: every
mutation is either valid (it loads) or refused with one line naming the file or key, never
an exception from inside a library, and an invalid one never changes an output file."""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pytest_saebench.errors import SaebenchError
from tests.conftest import SMALL_PYPROJECT

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
        low = {"seed": 0, "repeats": 1, "cache-size-mb": 0}[kind]
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
@example(("seed = -1\n", False))  # once passed validation and failed in every eval
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


def _cheap(mutation: tuple[str, bool]) -> bool:
    """Valid settings that would make one end-to-end example slow (many repeats or batches)."""
    m = re.search(r"(repeats|n_eval_reconstruction_batches) = (\d+)\n", mutation[0])
    return m is None or int(m.group(2)) <= 3


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_inputs_end_to_end(pytester, tiny_world, tmp_path_factory, data):
    """A real pytest run per example: exit 0 only for valid input, otherwise a usage error
    (pyproject) or a failed evaluation (cfg.json) of one line, no traceback, no file changed."""
    base = json.loads((tiny_world.topk / "cfg.json").read_text())
    if data.draw(st.booleans(), label="mutate cfg.json"):
        cfg, valid_cfg = data.draw(cfg_mutation(base))
        table, valid_table = "", True
        meta = cfg.get("metadata")
        if isinstance(meta, dict) and meta.get("hook_name") != base["metadata"]["hook_name"]:
            valid_cfg = False  # end to end, the model has only its own hooks
    else:
        cfg, valid_cfg = base, True
        table, valid_table = data.draw(table_mutation().filter(_cheap))
    work = tmp_path_factory.mktemp("fuzz")
    ckpt = shutil.copytree(tiny_world.topk, work / "ckpt")
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    results = work / "results.json"
    old = '{"tool": "pytest-saebench", "old": true}\n'  # an earlier run's: it may replace it
    results.write_text(old)
    core = "[tool.pytest-saebench.evals.core]"
    small = SMALL_PYPROJECT.replace("[tool.pytest-saebench]\n", "")
    if table.startswith(core):  # one core table: the mutated key replaces SMALL's own
        key = table.split("\n")[1].split(" =")[0]
        small = "\n".join(ln for ln in small.splitlines() if not ln.startswith(key))
        small = small.replace(core, table.strip())
        table = ""
    elif table.startswith("[tool"):
        small, table = small + "\n" + table, ""
    (work / "pyproject.toml").write_text(f"[tool.pytest-saebench]\n{table}{small}\n")
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    run = pytester.runpytest(f"--sae-path={ckpt}", "-c", str(work / "pyproject.toml"),
                             f"--saebench-json={results}", "-p", "no:cacheprovider",
                             f"--saebench-cache-dir={tiny_world.root / 'fuzz-cache'}")
    text = run.stdout.str() + run.stderr.str()
    assert "Traceback" not in text and "During handling" not in text, text
    event("valid" if valid_cfg and valid_table else "invalid")
    if valid_cfg and valid_table:  # evaluated; only a fuzzed threshold itself may fail
        failed = [ln for ln in run.outlines if ln.startswith("FAILED")]
        assert run.ret == 0 or all("::threshold[" in ln for ln in failed), text
        assert results.read_text() != old
        return
    if not valid_table:
        assert run.ret == pytest.ExitCode.USAGE_ERROR, text
        errors = [ln for ln in run.errlines if ln.startswith("ERROR:")]
        assert len(errors) == 1 and "pyproject.toml" in errors[0], text
    elif run.ret == pytest.ExitCode.USAGE_ERROR:  # cfg.json's schema, read at discovery
        errors = [ln for ln in run.errlines if ln.startswith("ERROR:")]
        assert len(errors) == 1 and "cfg.json" in errors[0], text
    else:  # what only loading the SAE or the model shows: the evaluate item fails
        run.assert_outcomes(failed=1)
        run.stdout.fnmatch_lines(["*/ckpt/*: *", "results: not written (evaluation "
                                                        "failed for ckpt)"])
    after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert after == before, "an invalid run changed a file"


def test_the_ci_profile_draws_the_same_examples_on_every_run(tiny_world):
    """What makes a passing commit pass on the next machine: under the default (ci) profile
    the end-to-end fuzz test's strategies give the same examples, run after run."""
    from hypothesis import settings as current

    assert current.default.derandomize and current.default.database is None
    base = json.loads((tiny_world.topk / "cfg.json").read_text())

    def draws() -> list:
        seen: list = []

        @settings(max_examples=25, deadline=None)
        @given(st.booleans(), cfg_mutation(base), table_mutation())
        def collect(which, cfg, table):
            seen.append((which, json.dumps(cfg[0], sort_keys=True, default=str), table))

        collect()
        return seen

    assert draws() == draws()


@pytest.mark.parametrize("where", ["pyproject", "cli", "env"])
def test_a_negative_seed_is_a_usage_error_naming_its_source(pytester, tiny_world, monkeypatch,
                                                            where):
    table = "seed = -1\n" if where == "pyproject" else ""
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench]\n{table}")
    args = ["--saebench-seed=-1"] if where == "cli" else []
    if where == "env":
        monkeypatch.setenv("SAEBENCH_SEED", "-1")
    run = pytester.runpytest(f"--sae-path={tiny_world.topk}", *args, "-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    source = {"pyproject": "pyproject.toml [tool.pytest-saebench]: 'seed'",
              "cli": "--saebench-seed", "env": "SAEBENCH_SEED"}[where]
    errors = [line for line in run.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and source in errors[0] and "from 0 to 4294967295, got -1" in \
        errors[0], run.errlines
