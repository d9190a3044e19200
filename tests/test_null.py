"""The null reference (null.py, gates/null.py): a random SAE of each checkpoint's shape,
built as sae_lens's trainer builds it, evaluated on the same windows and cached; null rules
gate the gain over it three ways, and a threshold without signal against it warns."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates import null as N
from pytest_saebench.loading.checkpoints import discover

ROOT = Path(__file__).parents[1]
GOOD = ROOT / "example_tests" / "checkpoints" / "good"
EV = "core.reconstruction_quality.explained_variance"
TOP1 = "sparse_probing.sae.sae_top_1_test_accuracy"
DIRECTIONS = {EV: "up", "core.sparsity.l0": "band", "core.misc_metrics.frac_dead": "down"}


def _parse(table: dict, gated=(EV, "core.sparsity.l0")) -> tuple[N.NullRule, ...]:
    return N.parse_rules(table, "[null]", lambda n: n, list(gated), DIRECTIONS.get)


def test_default_covers_thresholded_metrics_that_have_a_better_direction():
    rules = _parse({"default": {"min_gain": 0, "z": 3}})
    assert rules == (N.NullRule(EV, 0.0, 3.0),)  # L0 is kept in a band: no gain defined
    with pytest.raises(SaebenchError, match="'core.sparsity.l0' has no better direction"):
        _parse({"core.sparsity.l0": {"min_gain": 1}})
    with pytest.raises(SaebenchError, match="unknown key 'min_gian'.*min_gain"):
        _parse({EV: {"min_gian": 1}})
    with pytest.raises(SaebenchError, match="z must be a non-negative number"):
        _parse({EV: {"z": -1}})


def _gain(gain: float, se: float | None, df: int | None = 19) -> N.Gain:
    return N.Gain(0.9, 0.9 - gain, gain, se, df, "paired over 20 units with identical inputs")


@pytest.mark.parametrize(("gain", "se", "status"), [
    (1.0, 0.01, "pass"), (0.52, 0.01, "inconclusive"), (0.1, 0.01, "fail"),
    (0.6, None, "pass"), (0.5, None, "fail"), (0.4, None, "fail")])
def test_a_null_rule_is_three_way_on_the_interval_of_the_gain(gain, se, status):
    out = N.check(N.NullRule(EV, 0.5, 3.0), _gain(gain, se), "(sae x, suite fast)")
    assert out.status == status, out.message
    assert "\n" not in out.message and "random" in out.message
    c = 3.0 if se is None else N.critical_for(3.0, 19)
    if se is not None:
        assert f"[{gain - c * se:.4g}, {gain + c * se:.4g}]" in out.message


RANK = {"fail": 0, "inconclusive": 1, "pass": 2}


@given(st.floats(-2, 2), st.floats(0, 1), st.one_of(st.none(), st.floats(0, 0.5)),
       st.floats(-1, 1), st.sampled_from([0.0, 2.0, 3.0]))
def test_a_larger_gain_never_gets_a_worse_verdict(gain, more, se, min_gain, z):
    rule, ctx = N.NullRule(EV, min_gain, z), "(sae x, suite fast)"
    low, high = N.check(rule, _gain(gain, se), ctx), N.check(rule, _gain(gain + more, se), ctx)
    assert RANK[low.status] <= RANK[high.status], (low.message, high.message)


def test_signal_needs_the_gain_to_reach_three_standard_errors_as_t():
    assert N.signal(_gain(0.05, 0.01))[0]  # z = 5 > t_19 at z 3 (3.9)
    ok, note = N.signal(_gain(-0.0115, 0.012, df=2))
    assert not ok and note.startswith("no signal against a random SAE at this budget: z = -1.0")
    assert N.signal(_gain(0.0, None)) == (True, "")  # no standard error: not judged


def test_the_null_is_sae_lens_training_init_from_the_cfg_shared_by_shape(tmp_path):
    from sae_lens.saes.sae import TrainingSAE

    from pytest_saebench import null

    (good,) = discover(GOOD)
    ref = null.build(good, 42, tmp_path)
    assert ref.id.startswith("null:") and ref.cfg["d_sae"] == 1024 and ref.cfg["k"] == 32
    assert ref.cfg["metadata"]["hook_name"] == good.hook_name
    torch.manual_seed(42)  # independently: what SAELens's trainer starts from
    expected = TrainingSAE.from_dict({**good.cfg, "device": "cpu"}).state_dict()
    weights = load_file(str(ref.path / "sae_weights.safetensors"))
    assert set(weights) <= set(expected)
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected[name]), name
    again = null.build(good, 42, tmp_path)
    assert again.sha256 == ref.sha256  # written once, reused
    assert null.null_key(good, 7) != null.null_key(good, 42)


def _random_like_good(path: Path, seed: int) -> Path:
    """A random SAE of good's shape, initialised as SAELens's trainer does, another seed."""
    from sae_lens.saes.sae import TrainingSAE

    cfg = json.loads((GOOD / "cfg.json").read_text())
    torch.manual_seed(seed)
    TrainingSAE.from_dict({**cfg, "device": "cpu"}).save_inference_model(path)
    return path


def _example_null_table() -> str:
    text = (ROOT / "example_tests" / "pyproject.toml").read_text()
    start = text.index("[tool.pytest-saebench.null]")
    table = text[start:].split("\n\n", 1)[0]
    assert tomllib.loads(table)["tool"]["pytest-saebench"]["null"], table
    return table


def _checks(pytester, kind: str) -> dict[str, dict]:
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    return {f"{c['sae']}::{c['metric']}": c for c in data["checks"] if c["kind"] == kind}


@pytest.mark.slow
def test_good_passes_the_examples_null_rules_and_a_random_sae_fails_them(
        pytester, tmp_path, reference_cache):
    pytester.makefile(".toml", pyproject='[tool.pytest-saebench]\nselect-evals = ["core"]\n\n'
                      + _example_null_table() + "\n")
    rand = _random_like_good(tmp_path / "random", seed=7)
    result = pytester.runpytest(f"--sae-path={GOOD}", f"--sae-path={rand}",
                                f"--saebench-cache-dir={reference_cache}")
    checks = _checks(pytester, "null")
    assert result.ret == 1 and checks, result.stdout.str()[-3000:]
    for key, check in checks.items():
        if key.startswith("good::"):
            assert check["status"] == "pass", check
            # one unit per context: 64 in the loss phase, 128 in the variance phase
            assert re.search(r"paired over (64|128) units with identical inputs",
                             check["message"]), check
        else:
            assert check["status"] == "fail", check
            assert "is no better than a random SAE of its shape" in check["message"]
    # each failure is one line: the metric, the gain's interval, the random SAE's value
    # (the short summary repeats it after "FAILED ...", cut or not by the terminal's width)
    said = [line for line in result.stdout.lines
            if line.startswith("core.") and "is no better than a random SAE" in line]
    assert len(said) == sum(k.startswith("random::") for k in checks), said
    assert all("lies below min_gain" in line and "vs random" in line for line in said), said
    # the terminal table has the null gates too: a column with each verdict and its gain
    result.stdout.fnmatch_lines(["sae * metric * vs random (gain)",
                                 f"good * {EV} * PASS (+*)", f"random* {EV} * FAIL (*)"])
    # the null's results are kept: a second run reads them and evaluates no random SAE
    kept = sorted(reference_cache.glob("null/*/results/*.json"))
    assert kept
    stamps = [p.stat().st_mtime_ns for p in kept]
    pytester.runpytest(f"--sae-path={GOOD}", f"--saebench-cache-dir={reference_cache}")
    assert [p.stat().st_mtime_ns for p in kept] == stamps
    assert _checks(pytester, "null") == {k: v for k, v in checks.items()
                                         if k.startswith("good::")}


@pytest.mark.slow
def test_sparse_probing_at_fast_has_no_signal_on_the_reference_model_and_says_so(
        pytester, reference_cache):
    pytester.makefile(".toml", pyproject=f"""
[tool.pytest-saebench]
select-evals = ["core", "sparse_probing"]

[tool.pytest-saebench.thresholds]
"{EV}" = {{ min = 0.85 }}
"{TOP1}" = {{ min = 0.5 }}
""")
    result = pytester.runpytest(f"--sae-path={GOOD}", f"--saebench-cache-dir={reference_cache}",
                                "--saebench-null-reference=on")
    assert result.ret == 0, result.stdout.str()[-3000:]
    checks = _checks(pytester, "threshold")
    probe, ev = checks[f"good::{TOP1}"], checks[f"good::{EV}"]
    assert probe["status"] == "warn", probe
    assert "no signal against a random SAE at this budget: z = " in probe["message"]
    assert abs(probe["signal_z"]) < 3 and math.isfinite(probe["null"])
    assert ev["status"] == "pass" and ev["signal_z"] > 100, ev  # EV separates by far
    result.stdout.fnmatch_lines(["*SaebenchGateWarning*no signal against a random SAE*"])
