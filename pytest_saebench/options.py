"""The plugin's command-line options (torch-free: ``pytest --help`` reads them)."""

from __future__ import annotations

import pytest


def add_options(parser: pytest.Parser) -> None:
    """Register the ``saebench`` option group."""
    group = parser.getgroup("saebench", "SAE checkpoint evaluation (pytest-saebench)")
    group.addoption("--sae-path", action="append", metavar="PATH",
                    help="SAE checkpoint directory or a directory of checkpoints; repeatable. "
                         "Turns the plugin on.")
    group.addoption("--saebench", action="store_true",
                    help="evaluate the sae-path set in [tool.pytest-saebench] or SAEBENCH_SAE_PATH")
    group.addoption("--saebench-suite", choices=("fast", "standard", "full"),
                    help="evaluation suite (default: fast)")
    group.addoption("--saebench-model", metavar="NAME_OR_PATH",
                    help="model to evaluate on (default: auto = the checkpoint's model_name)")
    group.addoption("--saebench-model-kwargs", metavar="JSON",
                    help="keyword arguments added to the checkpoint's model_from_pretrained_kwargs "
                         "for HookedTransformer.from_pretrained_no_processing, e.g. "
                         "'{\"n_devices\": 2}'")
    group.addoption("--saebench-dataset", metavar="NAME_OR_PATH",
                    help="dataset: local text/jsonl/parquet/arrow path or save_to_disk folder, "
                         "or a Hub dataset name (streamed); text or pretokenized "
                         "(tokens/input_ids)")
    group.addoption("--saebench-device", help="torch device (default: auto)")
    group.addoption("--saebench-dtype", help="model dtype (default: float32)")
    group.addoption("--saebench-seed", type=int, help="random seed (default: 42)")
    group.addoption("--saebench-threads", type=int, metavar="N",
                    help="torch CPU threads (default 0: the CPUs this process may use, by its "
                         "affinity and cgroup quota, shared between xdist workers)")
    group.addoption("--saebench-repeats", type=int, metavar="N",
                    help="run every eval with N seeds (seed .. seed+N-1); report the mean, its "
                         "standard error and the spread")
    group.addoption("--saebench-threshold", action="append", metavar="ID>=X",
                    help="gate a metric, e.g. 'core.sparsity.l0<=120'; overrides the same "
                         "bound in pyproject; repeatable")
    group.addoption("--saebench-evals", metavar="NAMES",
                    help="comma-separated evals of the suite to run (default: all)")
    group.addoption("--saebench-gh-summary", choices=("auto", "always", "never"),
                    default="auto",
                    help="GitHub step summary and ::error annotations (auto: in GitHub Actions)")
    group.addoption("--saebench-baseline", metavar="PATH|ckpt:PATH",
                    help="compare with this results JSON, or evaluate the checkpoint at "
                         "ckpt:PATH as the baseline; rules in [tool.pytest-saebench.regression]")
    group.addoption("--saebench-update-baseline", nargs="?", const="", metavar="PATH",
                    help="write this run's results as the baseline (default: the configured "
                         "baseline path); regression gates pass")
    group.addoption("--saebench-step-pattern", metavar="REGEX",
                    help="how a checkpoint id names its training step, to match it with the "
                         "baseline across training runs: a regex with a (?P<step>...) group "
                         "and optionally a (?P<run>...) group (SAELens's checkpoints/<run "
                         "id>/<tokens>/ and step_N folders are known without it)")
    group.addoption("--saebench-on-inconclusive", choices=("warn", "fail", "pass"),
                    help="a gate whose interval holds its bound (z set, not enough evidence "
                         "either way): warn (default), fail or pass")
    group.addoption("--saebench-budget", choices=("fixed", "adaptive"),
                    help="fixed (default): every eval spends its suite's budget; adaptive: the "
                         "budget is a cap, core evaluates it in looks at growing prefixes of "
                         "the same windows and stops when every gate reading it is decided")
    group.addoption("--saebench-family", choices=("none", "holm"),
                    help="none (default): each gate with z fails at its own level; holm: the "
                         "run's fails obey Holm's step-down over its gates with z, so the "
                         "chance of any false fail in the run stays at one gate's")
    group.addoption("--saebench-null-reference", choices=("on", "off"),
                    help="on (default): each threshold also measures its metric against a "
                         "random SAE of the checkpoint's shape on the same windows (cached) "
                         "and warns where there is no signal; off: thresholds skip that (the "
                         "[tool.pytest-saebench.null] rules still evaluate it)")
    group.addoption("--saebench-html", metavar="PATH",
                    help="also write a self-contained HTML report with plots to PATH")
    group.addoption("--saebench-cache-dir", metavar="PATH",
                    help="cache of SAE-independent work (activations, clean losses, probing "
                         "sets); default: .pytest_cache/d/saebench")
    group.addoption("--saebench-no-cache", action="store_true",
                    help="neither read nor write the on-disk cache")
    group.addoption("--saebench-shard", metavar="K/N",
                    help="evaluate only shard K of N of the checkpoints (a stable round-robin "
                         "over their ids), e.g. one job of a CI matrix; combine the shards' "
                         "results with: python -m pytest_saebench merge")
    group.addoption("--saebench-json", metavar="PATH",
                    help="results JSON path (default: saebench-results.json; 'none' disables)")
