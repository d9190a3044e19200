"""A retrain judged against main's replicate runs (STATISTICS.md §6): the between-run variance
and the retrain's standard error recomputed independently, the verdict's false-fail rate under
no change calibrated through the real decision path from both sides, and where a checkpoint
stands among replicate runs."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_saebench.baseline import HISTORY_MIN_RUNS, Comparison, replicates
from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates import stats
from pytest_saebench.gates.lineage import RunPlace, nearest_position, run_place
from pytest_saebench.gates.regression import RegressionRule
from pytest_saebench.gates.retrain import (
    Replicate,
    between_runs,
    check_retrain,
    retrain_difference,
)
from pytest_saebench.loading.runs import check_replicates, fingerprint, flatten
from pytest_saebench.results import SaeResults

EV = "core.reconstruction_quality.explained_variance"


@pytest.mark.parametrize("sae_id, run, position", [
    ("final", "", "final"),
    ("runs/seed0/final", "runs/seed0", "final"),
    ("runs/seed0/checkpoints/ab12cd34/33280", "runs/seed0", "tokens:33280"),
    ("checkpoints/ab12cd34/final_49152", "", "tokens:49152"),
    ("saelens/checkpoints/bf8aedf9/16896", "saelens", "tokens:16896"),
])
def test_a_checkpoint_of_a_saelens_run_has_its_run_and_position(sae_id, run, position):
    assert run_place(sae_id) == RunPlace(run, position)


def test_outside_a_run_there_is_no_place_and_positions_match_by_tokens():
    assert run_place("sweep/k16") is None and run_place("good") is None
    held = {"tokens:16896", "tokens:33280", "final"}
    assert nearest_position(RunPlace("", "tokens:33280"), held) == ("tokens:33280", "")
    assert nearest_position(RunPlace("", "tokens:40000"), held) == (
        "tokens:33280", "the nearest earlier step: baseline at 33,280 tokens, this checkpoint "
                        "at 40,000")
    assert nearest_position(RunPlace("", "tokens:4608"), held) == (
        "main's replicates hold nothing at or before 4,608 tokens (they hold 16,896 tokens, "
        "33,280 tokens, the final SAE)")


@given(st.lists(st.floats(0.5, 1.0), min_size=2, max_size=8),
       st.lists(st.floats(1e-4, 1e-2), min_size=8, max_size=8))
def test_the_between_run_variance_is_the_random_effects_moment_estimate(values, ses):
    reps = [Replicate(v, s) for v, s in zip(values, ses, strict=False)]
    sigma2, df = between_runs(reps)
    expected = max(0.0, np.var(values, ddof=1) - np.mean([s * s for s in ses[:len(values)]]))
    assert df == len(values) - 1 and sigma2 == pytest.approx(expected, abs=1e-12)


def test_the_retrain_standard_error_recomputed_by_hand():
    main = [Replicate(0.926, 0.002, 19), Replicate(0.922, 0.003, 19), Replicate(0.913, 0.002, 19)]
    new = [Replicate(0.905, 0.0025, 19)]
    diff = retrain_difference(new, main)
    ys = [0.926, 0.922, 0.913]
    v_all = np.mean([0.002 ** 2, 0.003 ** 2, 0.002 ** 2, 0.0025 ** 2])
    sigma2 = max(0.0, np.var(ys, ddof=1) - v_all)
    v_main, v_new = np.mean([0.002 ** 2, 0.003 ** 2, 0.002 ** 2]), 0.0025 ** 2
    se = math.sqrt(sigma2 * (1 / 3 + 1) + v_main / 3 + v_new)
    assert diff.delta == pytest.approx(0.905 - np.mean(ys))
    assert diff.stderr == pytest.approx(se) and diff.df == 2 and diff.noise == "between runs"
    assert diff.run_sd == pytest.approx(math.sqrt(sigma2))
    # a known run-to-run sd: only the evaluation variances are estimated
    given_sd = retrain_difference(new, main[:1], run_sd=0.004)
    assert given_sd.stderr == pytest.approx(math.sqrt(0.004 ** 2 * 2 + 0.002 ** 2 + 0.0025 ** 2))
    assert given_sd.noise == "given" and given_sd.df is not None and given_sd.df > 19
    # one run on each side: unknown
    alone = retrain_difference(new, main[:1])
    assert alone.stderr is None and alone.noise == "unknown"


@dataclass
class _Eval:
    config: dict = field(default_factory=dict)
    unstructured: dict = field(default_factory=dict)


class _Res:
    """The part of SaeResults a retrain verdict reads."""

    def __init__(self, value, stderr, df=19):
        self._v, self._s, self._df = value, stderr, df
        self.evals = {"core": _Eval()}

    def value(self, metric):
        return self._v

    def stderr(self, metric):
        return self._s

    def dof(self, metric):
        return self._df


def _verdict(rule, new, main):
    return check_retrain(rule, "up", [_Res(*new)], [Replicate(v, s, 19) for v, s in main],
                         _Res(*main[0]), f"main's {len(main)} runs", "(sae x)")[0]


def test_a_damaged_retrain_fails_a_reseed_does_not_and_one_run_is_never_a_fail():
    rule = RegressionRule(EV, max_drop=0.01, z=2)
    main = [(0.926, 0.0025), (0.922, 0.0025), (0.913, 0.0025)]
    assert _verdict(rule, (0.80, 0.0025), main).status == "fail"
    assert _verdict(rule, (0.918, 0.0025), main).status in ("pass", "inconclusive")
    alone = _verdict(rule, (0.50, 0.0025), main[:1])  # a huge drop, but one run a side
    assert alone.status == "inconclusive" and "run-to-run noise is unknown" in alone.message
    assert "run_sd" in alone.message
    # the user's run_sd decides it
    with_sd = _verdict(RegressionRule(EV, max_drop=0.01, z=2, run_sd=0.005), (0.80, 0.0025),
                       main[:1])
    assert with_sd.status == "fail"
    # a rule without z is judged on the interval at z 2, never by the point
    pointless = _verdict(RegressionRule(EV, max_drop=0.001), (0.915, 0.0025), main)
    assert pointless.status == "inconclusive" and "judged at z 2" in pointless.message


def _false_fail_rate(draws: int, runs: int, z: float, ratio: float, seed: int = 0) -> float:
    """A retrain that changed nothing, against ``runs`` replicates on main, through
    check_retrain: the share of draws that fail ``{ max_drop = 0, z }``. The run-to-run
    standard deviation is ``ratio`` times the evaluation standard error."""
    rng = random.Random(seed)
    rule = RegressionRule(EV, max_drop=0.0, z=z)
    fails = 0
    for _ in range(draws):
        def one():
            se = math.sqrt(rng.gammavariate(19 / 2, 2 / 19))  # chi2_19 / 19, eval variance 1
            return rng.gauss(0, ratio) + rng.gauss(0, 1.0), se
        main = [one() for _ in range(runs)]
        fails += _verdict(rule, one(), main).status == "fail"
    return fails / draws


def _binomial_interval(p: float, n: int, k: float = 3.5) -> tuple[float, float]:
    half = k * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize("runs", [5, 8])
def test_under_no_change_a_retrain_fails_at_the_nominal_rate_from_both_sides(runs):
    nominal = stats.two_sided_alpha(2) / 2  # one side: a drop
    n = 20_000
    lo, hi = _binomial_interval(nominal, n)
    rate = _false_fail_rate(n, runs, 2.0, ratio=5.0)
    assert lo <= rate <= hi, (rate, nominal, lo, hi)


def test_the_normal_quantile_in_place_of_students_t_breaks_the_calibration(monkeypatch):
    """The calibration test can fail: with the normal's critical value a 5-run main lets
    far more reseeds fail than the nominal rate."""
    real = stats.critical.__wrapped__
    monkeypatch.setattr(stats, "critical", lambda z, df=None, alpha=None: real(z, None, alpha))
    nominal = stats.two_sided_alpha(2) / 2
    n = 20_000
    assert _false_fail_rate(n, 5, 2.0, ratio=5.0) > _binomial_interval(nominal, n)[1]


def test_history_supplies_replicates_of_the_same_configuration():
    entry = SaeResults("final", "", "a", "fast", run={"position": "final", "training": "t1"})
    history = [{"commit": f"{i}" * 40, "suite": "fast", "values": {"final": {EV: [0.9 + i / 100,
                                                                                  0.002]}},
                "runs": {"final": {"position": "final", "training": "t1"}}}
               for i in range(HISTORY_MIN_RUNS)]
    history.append({"commit": "f" * 40, "suite": "fast", "values": {"final": {EV: [0.5, 0.1]}},
                    "runs": {"final": {"position": "final", "training": "other config"}}})
    comp = Comparison("retrain", entry, "b", (entry,), RunPlace("", "final"), "t1",
                      history=tuple(history))
    found, source = replicates(comp, EV)
    assert [r.value for r in found] == [0.9, 0.91, 0.92][:HISTORY_MIN_RUNS]
    assert source == (f"main's history: {HISTORY_MIN_RUNS} runs of this configuration over "
                      f"{HISTORY_MIN_RUNS} commit(s)")
    fewer = Comparison("retrain", entry, "b", (entry,), RunPlace("", "final"), "t1",
                       history=tuple(history[:HISTORY_MIN_RUNS - 1]))
    assert replicates(fewer, EV) == ([], "the baseline's runs")  # entry has no EV value


def _run(root, name, **cfg):
    folder = root / "runs" / name / "final"
    folder.mkdir(parents=True)
    (folder / "runner_cfg.json").write_text(json.dumps(
        {"seed": 0, "lr": 3e-3, "checkpoint_path": f"/x/{name}/abcd1234", "sae": {"d_sae": 256},
         **cfg}))

    @dataclass
    class Ref:
        id: str
        source: object
        path: object = None
        error: object = None

    return Ref(f"runs/{name}/final", folder)


def test_a_folder_of_runs_must_hold_replicates_of_one_configuration(tmp_path):
    refs = [_run(tmp_path, "seed0", seed=0), _run(tmp_path, "seed1", seed=1)]
    check_replicates(refs)  # the seed and SAELens's folders differ by design
    refs.append(_run(tmp_path, "seed2", seed=2, lr=1e-3, sae={"d_sae": 512}))
    with pytest.raises(SaebenchError) as exc:
        check_replicates(refs)
    text = str(exc.value)
    assert "--sae-path runs: its training runs are not replicates" in text
    assert "lr: seed0 0.003, seed1 0.003, seed2 0.001" in text and "sae.d_sae" in text
    assert "\n" not in text
    assert fingerprint(flatten({"seed": 1, "lr": 1})) == fingerprint(flatten({"seed": 2,
                                                                               "lr": 1}))


def test_the_reports_name_the_noise_and_draw_mains_replicates_as_a_band():
    from pytest_saebench import history
    from pytest_saebench.reporting import terminal, trends
    from pytest_saebench.reporting.gates import noise_label

    assert noise_label({"noise": "between runs", "replicates": 3}) == "3 runs"
    assert noise_label({"noise": "given", "run_sd": 0.004}) == "run_sd 0.004"
    assert noise_label({"noise": "evaluation"}) == "eval"
    assert noise_label({"noise": "unknown"}) == "unknown" and noise_label({}) == ""
    runs = {f"runs/seed{s}/final": {"position": "final", "training": "t"} for s in range(3)}
    entry = {"commit": "a" * 40, "suite": "fast", "runs": runs,
             "values": {k: {EV: [0.92 + i / 100, 0.002]} for i, k in enumerate(runs)}}
    band = history.replicate_band([entry, {**entry, "runs": {}}], "final", EV)
    assert band == [(1, pytest.approx(0.93), pytest.approx(0.01), 3)]
    res = SaeResults("final", "", "x", "fast")
    check = {"sae": "final", "metric": EV, "status": "inconclusive", "kind": "regression"}
    page = trends.html_section([entry], False, [res], [check])
    assert "main&#x27;s replicates at the final SAE" in page or \
        "main's replicates at the final SAE" in page
    row = terminal.rows([res], [{**check, "noise": "between runs", "replicates": 3,
                                 "baseline": 0.93, "delta": -0.01}], None, False)
    assert row and row[0][-1] == "3 runs"
