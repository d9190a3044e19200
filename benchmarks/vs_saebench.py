"""This plugin side by side with SAEBench 0.6.0 on identical inputs: the speed ratio per
checkpoint of a sweep, and the largest difference in the numbers.

    pip install -e '.[vs-saebench]' && pip install --no-deps sae-bench==0.6.0
    python benchmarks/vs_saebench.py [--model smollm2-135m] [--evals core,absorption]

One process, one model object (loaded once, not timed; SAEBench's side gets its weights in
TransformerLens's own layout, ours in the runner's, see ``layout``), the same SAE files, the
token windows, labeled sets and absorption word sample the plugin reads (``saebench_side.py``
hands them to SAEBench's functions). A sweep of 4 checkpoints arrives as a training run's
checkpoints do: the first cold (nothing cached), each further one warm. Both sides keep what
their own design keeps between checkpoints: the plugin its in-memory tensor cache (no disk
cache), SAEBench its sparse-probing and TPP activation files and absorption's ground-truth
probe and word activations (core has none). Budgets: the plugin's ``fast`` presets, given to
SAEBench's configs field by field (SAEBench's paper settings are 10-60x larger; the ratio of
the per-checkpoint work does not depend on it). Repeats are interleaved; the minimum of each
is printed, wall seconds and CPU seconds (process time, all threads); ratio = SAEBench / ours.
Phases (summed over the sweep) say where each side spends its time.

``--budget adaptive`` adds core's time to the verdict with the plugin's adaptive budget
(docs/statistics.md): the core thresholds of ``--pyproject`` (by default the example's,
example_tests/pyproject.toml), each with ``z = 3`` where it has none, decided look by look;
the column sits beside the fixed budget's and SAEBench's (which has no early stop: its time
to a verdict is its whole run), and the verdicts of both budgets are printed, so a stop that
changed one would show.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
import tomllib
from pathlib import Path

import saebench_side as sb

ROOT = Path(__file__).parents[1]
CHECKPOINTS = ROOT / "example_tests" / "checkpoints"
# explained variance: SAEBench 0.6's definition, under the plugin's bug-compatible id
CORE_HEADLINE = {
    "explained_variance_v0_6": "core.reconstruction_quality.explained_variance_saebench_v0_6",
    "l0": "core.sparsity.l0",
    "ce_loss_score": "core.model_performance_preservation.ce_loss_score",
    "kl_div_score": "core.model_behavior_preservation.kl_div_score"}


def headline(name: str) -> dict[str, str]:
    """SAEBench's key -> the plugin's metric id, for the numbers compared (the k and N of the
    ``fast`` presets both sides run)."""
    from pytest_saebench.evals import absorption, sparse_probing, tpp

    if name == "core":
        return CORE_HEADLINE
    if name == "absorption":
        return {key: f"{absorption.EVAL_TYPE_ID}.mean.{key}" for key in (
            "mean_absorption_fraction_score", "mean_full_absorption_score",
            "mean_num_split_features")}
    if name == "sparse_probing":
        keys = ["llm.llm_test_accuracy", "sae.sae_test_accuracy",
                *(f"sae.sae_top_{k}_test_accuracy"
                  for k in sparse_probing.PRESETS["fast"].k_values)]
        return {key.split(".")[1]: f"sparse_probing.{key}" for key in keys}
    return {f"tpp_threshold_{n}_total_metric": f"tpp.tpp_metrics.tpp_threshold_{n}_total_metric"
            for n in tpp.PRESETS["fast"].n_values}


def sweep(model: str, tmp: Path) -> list[Path]:
    """Four checkpoints of one model and hook."""
    if model == "saebench-reference":
        return [CHECKPOINTS / "good", *(CHECKPOINTS / "sweep" / k for k in ("k8", "k16", "k64"))]
    if model == "smollm2-135m":  # one shipped SAE, four names: each is evaluated anew
        paths = [tmp / f"step{i}" for i in range(4)]
        for p in paths:
            shutil.copytree(CHECKPOINTS / "smollm2" / "L6_topk", p)
        return paths
    raise SystemExit(f"--model: saebench-reference or smollm2-135m, not {model!r}")


def timed(fn):
    """``(result, wall s, CPU s)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


EXAMPLE_PYPROJECT = ROOT / "example_tests" / "pyproject.toml"


def core_thresholds(pyproject: Path, z: float = 3.0) -> tuple:
    """``pyproject``'s core thresholds, each with confidence ``z`` where it has none."""
    from pytest_saebench.gates.thresholds import make_threshold

    table = tomllib.loads(pyproject.read_text())["tool"]["pytest-saebench"]["thresholds"]
    return tuple(make_threshold(m, s.get("min"), s.get("max"), s.get("severity", "error"),
                                f"{pyproject} '{m}'", s.get("z") or z)
                 for m, s in table.items() if m.startswith("core."))


def verdicts(res, thresholds) -> dict[str, str]:
    """Metric name -> the threshold's verdict on ``res``, at the look its core stopped at
    (an inconclusive one with its value and standard error)."""
    from pytest_saebench.gates.budget import threshold_outcome

    out = {}
    for t in thresholds:
        outcome = threshold_outcome(t, res, "")
        shown = outcome.status
        if shown == "inconclusive":
            shown += f" ({res.value(t.metric):.4g} ± {res.stderr(t.metric):.2g}"
            shown += ", futility)" if "stopped for futility" in outcome.message else ")"
        out[t.metric.rsplit(".", 1)[1]] = shown
    return out


def statuses(shown: dict[str, str]) -> dict[str, str]:
    """The verdicts alone (an inconclusive gate's value differs between looks)."""
    return {k: v.split(" ", 1)[0] for k, v in shown.items()}


def stopped_at(res) -> str:
    """Which look core stopped at, or that it spent the whole budget."""
    from pytest_saebench.gates.budget import look_of

    look = look_of(res.evals["core"].unstructured)
    return f"look {look.index + 1} of {len(look.fractions)}" if look else "whole budget"


def make_runner(paths: list[Path], model: str, evals: list[str], budget: str = "fixed",
                thresholds: tuple = ()):
    """A plugin runner for ``evals`` at their ``fast`` presets, tensor cache in memory."""
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import get_eval, metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner

    settings = Settings(sae_paths=tuple(map(str, paths)), model=model, device="cpu",
                        results_json=None, cache=False, budget=budget,
                        thresholds=thresholds, null_reference="off")
    configs = {name: get_eval(name).PRESETS["fast"] for name in evals}
    if "tpp" in configs:  # SAEBench does not re-mask after ablation (METRICS.md §5.2)
        configs["tpp"] = dataclasses.replace(configs["tpp"], remask_after_ablation=False)
    return Runner(settings, discover_all(list(map(str, paths))), configs, metric_registry())


def run_ours(paths, model, evals, clock, budget: str = "fixed", thresholds: tuple = ()):
    """Per checkpoint and eval: ``(metrics, wall, cpu)`` (core's also its ``verdicts``)."""
    from pytest_saebench.evals import absorption, core, core_side, sparse_probing, tpp
    from pytest_saebench.loading import data

    runner = make_runner(paths, model, evals, budget, thresholds)
    _ = runner.device  # threads are set here, for both sides
    layout(runner.model_for(next(iter(runner.checkpoints))), True)  # loading is not timed
    out = []
    with (clock.wrapping(data, "token_windows", "reading windows"),
          clock.wrapping(core_side, "_compute_loss_side", "core: clean + ablated runs"),
          clock.wrapping(core_side, "_compute_variance_side", "core: activations"),
          clock.wrapping(core, "_loss_phase", "core: spliced runs"),
          clock.wrapping(sparse_probing, "_compute_llm_side", "probing: LLM side"),
          clock.wrapping(tpp, "_compute_llm_side", "TPP: LLM side"),
          clock.wrapping(absorption, "_compute_llm_side", "absorption: LLM side + probe")):
        for sid in runner.checkpoints:
            row = {}
            for name in evals:
                res, wall, cpu = timed(lambda n=name, s=sid: runner.results(s, [n]))
                row[name] = ({k: res.value(v) for k, v in headline(name).items()}, wall, cpu)
                if name == "core":
                    row["verdicts"], row["look"] = verdicts(res, thresholds), stopped_at(res)
            out.append(row)
    return out, runner


def saebench_one(name: str, runner, sid: str, path: Path, clock, artifacts: Path):
    """SAEBench's ``name`` on checkpoint ``sid``, fed the runner's model and inputs."""
    from pytest_saebench.evals import core

    ref, model = runner.ref(sid), runner.model_for(sid)
    if name == "core":
        preset = core.PRESETS["fast"]
        n = preset.batch_size_prompts * (preset.n_eval_reconstruction_batches
                                         + preset.n_eval_sparsity_variance_batches)
        tokens, _ = runner.inputs.token_source(model, ref, runner.dataset_for(sid),
                                               runner.settings.seed)
        windows = tokens(n, preset.context_size or ref.meta["context_size"], ref.prepend_bos)
        return sb.core(model, sb.load_sae(path), windows, preset, clock)
    if name == "absorption":
        return sb.absorption(model, sb.load_sae(path), runner.configs_for("fast")[name],
                             runner.settings.seed, artifacts / name, path.name, clock)
    fn = {"sparse_probing": sb.sparse_probing, "tpp": sb.tpp}[name]
    return fn(model, sb.load_sae(path), runner.configs_for("fast")[name], runner.settings.seed,
              artifacts / name, clock)


def layout(model, transposed: bool) -> None:
    """The runner's weight layout (``activations.transposed_layout``) for our side, and
    TransformerLens's own for SAEBench's, which loads models as TransformerLens does: the
    values, and so the numbers, are the same either way; only the speed differs."""
    from pytest_saebench.activations import _copies_transpose, transposed_layout

    if transposed:
        transposed_layout(model)
        return
    for module in model.modules():
        if _copies_transpose(module):
            for p in module.parameters(recurse=False):
                p.data = p.data.contiguous()


def run_saebench(paths, runner, evals, clock, artifacts: Path):
    """SAEBench on the runner's model and windows; per checkpoint and eval as ``run_ours``."""
    shutil.rmtree(artifacts, ignore_errors=True)  # its cache starts empty, as ours does
    layout(runner.model_for(next(iter(runner.checkpoints))), transposed=False)
    return [{name: timed(lambda n=name, s=sid, p=path: saebench_one(n, runner, s, p, clock,
                                                                     artifacts))
             for name in evals}
            for sid, path in zip(runner.checkpoints, paths, strict=True)]


def best(runs: list[list[dict]], name: str) -> list[tuple[float, float]]:
    """Per checkpoint, the minimum wall and CPU over repeats."""
    return [(min(r[i][name][1] for r in runs), min(r[i][name][2] for r in runs))
            for i in range(len(runs[0]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saebench-reference")
    parser.add_argument("--evals", default="core,sparse_probing,tpp,absorption")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=4, help="sweep size, 1 to 4")
    parser.add_argument("--budget", choices=("fixed", "adaptive"), default="fixed",
                        help="adaptive: also core's time to the verdict, adaptive budget")
    parser.add_argument("--pyproject", type=Path, default=EXAMPLE_PYPROJECT,
                        help="whose core thresholds --budget adaptive decides (z = 3 where "
                             "a threshold has none)")
    args = parser.parse_args()
    evals = args.evals.split(",")
    adaptive = args.budget == "adaptive" and "core" in evals
    gates = core_thresholds(args.pyproject) if adaptive else ()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="vs-saebench-"))
    paths = sweep(args.model, tmp)[:args.checkpoints]
    ours_runs, theirs_runs, adaptive_runs = [], [], []
    ours_clock, theirs_clock = sb.PhaseClock(), sb.PhaseClock()
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        ours, runner = run_ours(paths, args.model, evals, ours_clock, "fixed", gates)
        ours_runs.append(ours)
        if adaptive:
            adaptive_runs.append(run_ours(paths, args.model, ["core"], sb.PhaseClock(),
                                          "adaptive", gates)[0])
        theirs_runs.append(run_saebench(paths, runner, evals, theirs_clock, tmp / "artifacts"))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.model}, fast presets, sweep of {len(paths)}, {runner.threads} torch threads; "
          f"min of {args.repeats} interleaved repeats; seconds wall (CPU); ratio = SAEBench/ours")
    for name in evals:
        print(f"\n{name:<16} {'ours':>14} {'SAEBench':>16} {'ratio':>7}")
        for i, ((ow, oc), (tw, tc)) in enumerate(zip(best(ours_runs, name),
                                                     best(theirs_runs, name), strict=True)):
            label = ("1st (cold)", "2nd (warm)", "3rd (warm)", "4th (warm)")[i]
            print(f"{label:<16} {ow:>6.2f} ({oc:>5.2f}) {tw:>7.2f} ({tc:>6.2f}) {tw / ow:>6.1f}x")
        diffs = {k: max(abs(o[name][0][k] - t[name][0][k])
                        for o, t in zip(ours_runs[0], theirs_runs[0], strict=True))
                 for k in headline(name)}
        print("largest |ours - SAEBench|: "
              + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    if adaptive:
        print_adaptive(ours_runs, theirs_runs, adaptive_runs)
    for who, clock in (("ours", ours_clock), ("SAEBench", theirs_clock)):
        phases = ", ".join(f"{k} {v / args.repeats:.1f} s" for k, v in clock.seconds.items())
        print(f"phases per sweep, {who}: {phases}")


def print_adaptive(ours_runs, theirs_runs, adaptive_runs) -> None:
    """Core's time to the verdict: fixed, adaptive and SAEBench side by side, and both
    budgets' verdicts (they must agree)."""
    print(f"\ncore to the verdict (thresholds, z = 3)         {'fixed':>8} {'adaptive':>14} "
          f"{'SAEBench':>16} {'ratio':>7}  verdicts (adaptive; fixed if they differ)")
    for i, ((fw, _), (aw, ac), (tw, _)) in enumerate(zip(
            best(ours_runs, "core"), best(adaptive_runs, "core"), best(theirs_runs, "core"),
            strict=True)):
        fixed, adapt = ours_runs[0][i]["verdicts"], adaptive_runs[0][i]["verdicts"]
        shown = adaptive_runs[0][i]["look"] + ": " + ", ".join(
            f"{k} {v}" for k, v in sorted(adapt.items()))
        if statuses(fixed) != statuses(adapt):
            shown += f"; FIXED: {fixed}"
        label = ("1st (cold)", "2nd (warm)", "3rd (warm)", "4th (warm)")[i]
        print(f"{label:<47} {fw:>7.2f} {aw:>6.2f} ({ac:>5.2f}) {tw:>16.2f} {tw / aw:>6.1f}x"
              f"  {shown}")


if __name__ == "__main__":
    main()
