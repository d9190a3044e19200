"""Command line: ``python -m pytest_saebench demo [DIR]``, ``show RESULTS.json``,
``compare NEW.json OLD.json [--fail]`` and ``merge SHARD.json... -o ALL.json``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

DEMO_THRESHOLDS = """[tool.pytest-saebench.thresholds]
"core.sparsity.l0" = { min = 1, max = 64 }
"core.reconstruction_quality.explained_variance" = { min = 0.8 }
"core.model_performance_preservation.ce_loss_score" = { min = 0.9 }
"""


def say(line: str) -> None:
    """A progress line, shown at once (the demo's steps take tens of seconds)."""
    print(line, flush=True)


def build_demo(root: Path) -> dict[str, Path]:
    """Train a tiny model on a generated corpus plus a trained and a random TopK SAE."""
    from pytest_saebench import testing as T
    from pytest_saebench.loading.data import load_text_dataset, token_windows

    corpus = T.make_corpus(2000)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in corpus))
    say("demo: training a tokenizer and a 2-layer language model on 2,000 generated "
        "documents (200 steps, about 20 s) ...")
    model = T.build_tiny_model(root / "model", corpus, steps=200, n_ctx=64)
    say("demo: training a TopK SAE (k 16, 256 latents) on its layer-0 residual stream; its "
        "twin stays random ...")
    tokens = token_windows(model.tokenizer, load_text_dataset(str(root / "corpus.jsonl")),
                           256, 64, True, 0)
    acts = T.collect_activations(model, tokens, "blocks.0.hook_resid_post", 0)
    meta = {"model_name": str(root / "model"), "hook_name": "blocks.0.hook_resid_post",
            "context_size": 64, "dataset_path": str(root / "corpus.jsonl")}
    paths = {"trained": root / "saes" / "trained", "random": root / "saes" / "random"}
    T.make_sae(64, 256, "topk", k=16, metadata=meta, seed=1).save_model(paths["random"])
    sae = T.make_sae(64, 256, "topk", k=16, metadata=meta, seed=1)
    T.train_sae(sae, acts, steps=300)
    sae.save_model(paths["trained"])
    (root / "pyproject.toml").write_text(DEMO_THRESHOLDS)
    (root / "tests").mkdir(exist_ok=True)
    return paths


def _demo(directory: str | None, keep: bool) -> int:
    """Build the demo, gate both SAEs, and say whether the outcome is the designed one:
    ``trained`` passes, ``random`` fails (exit 0 then, else 1)."""
    import shutil

    import pytest

    root = Path(directory or tempfile.mkdtemp(prefix="saebench-demo-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        print(f"building the demo in {root} ...", flush=True)
        build_demo(root)
        say("demo: gating both SAEs with pytest (the fast suite) ...")
        results = root / "saebench-results.json"
        pytest.main([f"--rootdir={root}", "-c", str(root / "pyproject.toml"),
                     f"--sae-path={root / 'saes'}", "-p", "no:cacheprovider",
                     "-W", "ignore::pytest.PytestAssertRewriteWarning",
                     f"--saebench-json={results}", str(root / "tests")])
        checks = json.loads(results.read_text())["checks"] if results.exists() else []
        failed = {c["sae"].rsplit("/", 1)[-1] for c in checks
                  if c["status"] in ("fail", "error")}
        if checks and failed == {"random"}:
            print("demo: as designed. 'trained' passed every gate and 'random', an untrained "
                  "SAE of the same shape, failed: the gates tell them apart. (pytest's FAILED "
                  "lines above are the random SAE's.)")
            return 0
        print(f"demo: NOT as designed: expected only 'random' to fail, got "
              f"{sorted(failed) or 'no failures'}")
        return 1
    finally:
        if directory is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
            print(f"demo: removed {root} (keep it with --keep, or give a directory)")


def _show(path: str, verbose: bool) -> int:
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.reporting.terminal import render, rows
    from pytest_saebench.results import load_envelope

    try:
        results, checks, suite = load_envelope(path)
    except SaebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: suite {suite}, {len(results)} checkpoint(s)")
    registry = metric_registry()
    for line in render(rows(results, checks, registry, verbose), registry):
        print(line)
    failed = [c for c in checks if c["status"] in ("fail", "error")]
    return 1 if failed else 0


def _compare(new_path: str, old_path: str, fail: bool, config: str | None) -> int:
    from pytest_saebench.config import read_file_config
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.gates.regression import RegressionRule, check_metric, env_differences, pick
    from pytest_saebench.gates.thresholds import fmt, gate_context
    from pytest_saebench.reporting.terminal import align
    from pytest_saebench.results import load_envelope

    registry = metric_registry()
    try:
        new_all, _, suite = load_envelope(new_path)
        old_all = {r.sae_id: r for r in load_envelope(old_path)[0]}
        fc = read_file_config(Path(config).parent if config else Path.cwd())
        rules = _rules(fc, registry)
        frontier_table, frontier_messages = _frontier_rows(fc, registry, new_all, suite)
    except SaebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rules:
        print("no [tool.pytest-saebench.regression] rules found; comparing every metric with "
              "a direction using max_drop = 0, z = 2 (moves beyond 2 standard errors)")
    table, messages = [], []
    for new in new_all:
        old, how = pick(old_all, new.sae_id)
        if old is None:
            messages.append(f"{new.sae_id}: not in {old_path}"
                            f"{' (' + how + ')' if how else ''}; nothing to compare")
            continue
        if how:
            messages.append(f"{new.sae_id}: compared with {old.sae_id} of {old_path} ({how})")
        messages += [f"{new.sae_id}: environment differs: {d}"
                     for d in env_differences(new.env, old.env)]
        for rule in rules or [RegressionRule(m, max_drop=0.0, z=2.0)
                              for m in new.all_metrics()
                              if m in registry and registry[m].direction in ("up", "down")]:
            if not new.computed(rule.metric):
                continue
            spec = registry.get(rule.metric)
            direction = spec.direction if spec else "info"
            out = check_metric(rule, direction, new, old, old_path,
                               gate_context(new.sae_id, suite))
            a, b = old.value(rule.metric), new.value(rule.metric)
            delta = f"{b - a:+.4g}" if a is not None and b is not None else ""
            table.append([new.sae_id, rule.metric, fmt(a), fmt(b), delta, rule.limit_text(),
                          out.status.upper()])
            if out.status in ("fail", "warn", "skip"):
                messages.append(out.message)
    table += frontier_table
    messages += frontier_messages
    print(f"{new_path} vs {old_path}")
    for line in align(["sae", "metric", "old", "new", "Δ", "rule", "status"], table):
        print(line)
    for message in messages:
        print(message)
    failed = sum(row[-1] == "FAIL" for row in table)
    print(f"{failed} regression(s) in {len(table)} comparison(s)")
    return 1 if fail and failed else 0


def _frontier_rows(fc, registry, results: list, suite: str) -> tuple[list, list[str]]:
    """Rows for the file's frontier rules: each checkpoint against its sweep's frontier."""
    from pytest_saebench.config import frontier_rules
    from pytest_saebench.gates.frontier import check, interpolate
    from pytest_saebench.gates.thresholds import fmt, gate_context
    from pytest_saebench.results import load_frontier

    rows, messages = [], []
    for rule in frontier_rules(fc, registry.resolve, lambda m: registry[m].direction):
        direction = registry[rule.metric].direction
        front = load_frontier(rule, direction == "up")
        for res in results:
            if not (res.computed(rule.metric) and res.computed(rule.x)):
                continue
            x, y = res.value(rule.x), res.value(rule.metric)
            out = check(rule, direction, x, y, res.stderr(rule.metric), front,
                        gate_context(res.sae_id, suite))
            at = interpolate(front, x) if x is not None else None
            rows.append([res.sae_id, rule.metric, fmt(at[0]) if at else "-", fmt(y),
                         f"{y - at[0]:+.4g}" if at and y is not None else "",
                         f"{rule.limit_text()} ({Path(rule.against).name})",
                         out.status.upper()])
            if out.status in ("fail", "warn", "skip"):
                messages.append(out.message)
    return rows, messages


def _rules(fc, registry) -> list:
    from pytest_saebench.config import regression_rules

    gated = [registry.resolve(name) for name in fc.table.get("thresholds", {})]
    return list(regression_rules(fc, registry.resolve, gated))


def _merge(paths: list[str], out: str, html: str | None, gh_summary: bool) -> int:
    """Combine shard results into one envelope, and optionally its HTML and step summary,
    written as one step."""
    import os

    from pytest_saebench.atomic import json_bytes, write_many_atomic
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.reporting import github
    from pytest_saebench.reporting import html as html_report
    from pytest_saebench.results import envelope_results
    from pytest_saebench.sharding import merge

    try:
        for path, option in ((out, "-o"), (html, "--html")):
            if path and Path(path).is_dir():
                raise SaebenchError(f"merge {option} {path}: is a directory; give a file path")
        inputs = {Path(p).resolve() for p in paths}
        for path, option in ((out, "-o"), (html, "--html")):
            if path and Path(path).resolve() in inputs:
                raise SaebenchError(f"merge {option} {path}: is one of the shards being merged; "
                                    "write the merged results elsewhere")
        if gh_summary and not os.environ.get("GITHUB_STEP_SUMMARY"):
            raise SaebenchError("merge --gh-summary: GITHUB_STEP_SUMMARY is not set (it is "
                                "inside a GitHub Actions step)")
        data = merge(paths)
    except SaebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = [(Path(out), json_bytes(data))]
    results, checks, suite = envelope_results(data), data["checks"], data["suite"]
    errors = {k: v["error"] for k, v in data["saes"].items() if v.get("error")}
    try:  # every file staged before any is written: an error writes nothing
        if html:
            files += html_report.staged(html, results, checks, suite, errors, metric_registry())
        if gh_summary:
            files += github.staged(checks, results, suite, html, errors)
        write_many_atomic(files)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: merge: nothing written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    failed = sum(c["status"] in ("fail", "error") for c in checks)
    print(f"{out}: {len(results)} checkpoint(s) from {len(paths)} shard(s), "
          f"{len(checks)} gate(s), {failed} failed" + (f"; {html}" if html else "")
          + (f"; evaluation failed for {', '.join(sorted(errors))}" if errors else ""))
    # As pytest itself: a failed gate or checkpoint fails the step, so CI never keeps it as
    # a baseline.
    return 1 if failed or errors else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pytest_saebench")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build a tiny model and two SAEs, then gate them")
    demo.add_argument("directory", nargs="?",
                      help="where to build and keep it (default: a temporary directory, "
                           "removed afterwards)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    show = sub.add_parser("show", help="print the metric table of a results JSON")
    show.add_argument("results", help="a saebench-results.json written by the plugin")
    show.add_argument("-v", "--verbose", action="store_true", help="every metric")
    comp = sub.add_parser("compare", help="compare two results JSONs with the regression rules")
    comp.add_argument("new", help="results JSON of the candidate")
    comp.add_argument("old", help="results JSON of the baseline")
    comp.add_argument("--fail", action="store_true", help="exit 1 when a rule is broken")
    comp.add_argument("--config", metavar="PYPROJECT",
                      help="pyproject.toml with the rules (default: nearest from here)")
    mrg = sub.add_parser("merge", help="combine the results JSONs of all N shards of one run "
                         "(exit 1 when a gate failed, 2 when a shard is missing)")
    mrg.add_argument("shards", nargs="+", help="results JSON of each shard")
    mrg.add_argument("-o", "--output", required=True, help="where the merged JSON goes")
    mrg.add_argument("--html", metavar="PATH", help="also write the combined HTML report")
    mrg.add_argument("--gh-summary", action="store_true",
                     help="append the combined summary to $GITHUB_STEP_SUMMARY")
    args = parser.parse_args(argv)
    if args.command == "merge":
        try:
            return _merge(args.shards, args.output, args.html, args.gh_summary)
        except KeyboardInterrupt:  # the files are written in one step at the end, or not
            print("merge: interrupted; nothing was written", file=sys.stderr)
            return 130
    if args.command == "compare":
        return _compare(args.new, args.old, args.fail, args.config)
    if args.command == "show":
        return _show(args.results, args.verbose)
    if args.command == "demo":
        return _demo(args.directory, args.keep)
    return 2


if __name__ == "__main__":
    sys.exit(main())
