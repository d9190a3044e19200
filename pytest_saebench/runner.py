"""Evaluate each checkpoint once per session: checkpoint -> model + tokens -> evals -> results."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from pytest_saebench.config import Settings
from pytest_saebench.errors import SaebenchError
from pytest_saebench.inputs import Inputs
from pytest_saebench.loading.checkpoints import CheckpointRef
from pytest_saebench.results import SaeResults

_UNASKED = object()  # the judge hook has not been asked yet (None is a valid answer)


class EvaluationFailed(Exception):
    """An eval raised; dependent gates report this instead of a value."""


class Runner:
    """Lazily evaluates checkpoints and caches models, datasets, token windows and results."""

    def __init__(self, settings: Settings, checkpoints: list[CheckpointRef],
                 eval_configs: dict[str, Any], registry: Any):
        self.settings = settings
        self.registry = registry
        self.checkpoints = {ref.id: ref for ref in checkpoints}
        self.other_shards: list[str] = []  # --saebench-shard: ids left to the other shards
        # reporting.progress.Progress (set by the plugin): told when each eval starts and ends.
        self.progress: Any = None
        # ckpt:PATH baselines: evaluated like checkpoints but given no gate items.
        self.baseline_checkpoints: dict[str, CheckpointRef] | None = None
        self.baselines: Any = None  # baseline.Baselines, made on first use
        # null references (null.py): random SAEs of the checkpoints' shapes, by id
        self.null_checkpoints: dict[str, CheckpointRef] = {}
        self.null_gains: dict[str, dict[str, Any]] = {}  # sae_id -> metric -> gates.null.Gain
        self._suite_configs: dict[str, dict[str, Any]] = {settings.suite: eval_configs}
        # Evals of the suite the selected items read (set after collection; None = all).
        self.needed: tuple[str, ...] | None = None
        self._results: dict[tuple[str, str], SaeResults] = {}
        self._failures: dict[tuple[str, str, str], BaseException] = {}
        self.inputs = Inputs(settings, lambda: self.device)
        self._loaded: dict[str, Any] = {}
        self._memo: dict[str, Any] = {}
        self._sae_memo: tuple[str, dict[str, Any]] = ("", {})
        self.cache = None  # TensorCache, made on first use (it imports torch)
        self._device: str | None = None
        self.threads = 0  # torch's CPU threads, set with the device
        # Set under pytest-xdist: where workers share evaluations (see shared.py).
        self.shared_dir: Path | None = None
        self.worker_id = "main"
        self.evaluation_counts: dict[str, int] = {}
        # Set by the plugin: asks conftest.py's pytest_saebench_autointerp_judge hook.
        self.judge_provider: Any = None
        self._judge: Any = _UNASKED

    # -- environment -------------------------------------------------------------------
    @property
    def device(self) -> str:
        """The torch device: ``--saebench-device``, else cuda when available (one GPU per
        pytest-xdist worker: ``gwN`` gets ``cuda:N mod count``), else cpu."""
        if self._device is None:
            self._set_threads()
            if self.settings.device != "auto":
                from pytest_saebench.loading.model import available_device

                self._device = available_device(self.settings.device)
            else:
                import torch

                self._device = "cpu"
                if torch.cuda.is_available():
                    worker = self.worker_id.removeprefix("gw")
                    count = torch.cuda.device_count()
                    self._device = (f"cuda:{int(worker) % count}" if worker.isdigit()
                                    and count > 1 else "cuda")
        return self._device

    def _set_threads(self) -> None:
        """torch's CPU threads for the run (see threads.py), set once, before any work."""
        import torch

        from pytest_saebench.threads import threads_for_run

        self.threads = threads_for_run(self.settings.threads)
        torch.set_num_threads(self.threads)

    def errors(self) -> dict[str, str]:
        """``{sae_id: message}`` for every checkpoint whose evaluation failed."""
        out: dict[str, str] = {}
        for (sae_id, suite, name), exc in self._failures.items():
            if suite == self.settings.suite:
                out.setdefault(sae_id, f"{name}: {exc}")
        return out

    def evaluated(self) -> list[SaeResults]:
        """Results of the session's suite for every checkpoint evaluated so far."""
        suite = self.settings.suite
        return [self._results[(k, suite)] for k in self.checkpoints
                if (k, suite) in self._results]

    def run_info(self) -> dict[str, Any]:
        """What makes this run's results comparable with another's (merging shards)."""
        s = self.settings
        run = self.default_evals(s.suite)
        configs = {name: dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
                   for name, cfg in self.configs_for(s.suite).items() if name in run}
        return {"eval_configs": configs, "model": s.model, "dataset": s.dataset,
                "seed": s.seed, "dtype": s.dtype,
                "shard": f"{s.shard[0]}/{s.shard[1]}" if s.shard else None}

    def frontier_points(self, rule: Any) -> list[tuple[float, float, float]]:
        """The Pareto frontier of ``rule.against``'s checkpoints (read once per file)."""
        from pytest_saebench.results import load_frontier

        key = ("frontier", rule.against, rule.metric, rule.x)
        if key not in self._memo:
            spec = self.registry.get(rule.metric)
            self._memo[key] = load_frontier(rule, spec is None or spec.direction == "up")
        return self._memo[key]

    def configs_for(self, suite: str) -> dict[str, Any]:
        """Eval configs of ``suite`` with the file's per-eval overrides applied."""
        if suite not in self._suite_configs:
            from pytest_saebench.suites import eval_configs

            self._suite_configs[suite] = eval_configs(suite, dict(self.settings.eval_overrides),
                                                      select=self.settings.select_evals)
        return self._suite_configs[suite]

    def default_evals(self, suite: str) -> list[str]:
        """The evals a plain ``results(sae_id)`` runs: the suite's, less those no selected
        item reads (``-k``, ``--lf``)."""
        names = list(self.configs_for(suite))
        if suite != self.settings.suite or self.needed is None:
            return names
        return [n for n in names if n in self.needed]

    def ref(self, sae_id: str) -> CheckpointRef:
        """The checkpoint (or ``ckpt:`` baseline checkpoint) with id ``sae_id``."""
        if sae_id in self.checkpoints:
            return self.checkpoints[sae_id]
        if sae_id in self.null_checkpoints:
            return self.null_checkpoints[sae_id]
        return (self.baseline_checkpoints or {})[sae_id]

    # -- the null reference (null.py) --------------------------------------------------
    def null_results(self, sae_id: str, metric: str) -> SaeResults:
        """Results of ``sae_id``'s null reference (a random SAE of its shape, on the same
        windows) for the eval computing ``metric``; cached on disk across runs."""
        from pytest_saebench import null

        eval_type = metric.split(".", 1)[0]
        names = [n for n in self.configs_for(self.settings.suite)
                 if self.eval_type(n) == eval_type]
        ref = null.build(self.ref(sae_id), self.settings.seed, self._null_root())
        self.null_checkpoints.setdefault(ref.id, ref)
        return self.results(ref.id, names)

    def _null_root(self) -> Path | None:
        s = self.settings
        return Path(s.cache_dir) if s.cache_dir and s.cache else None

    # -- baselines (baseline.py owns the file and what a checkpoint is compared with) -----
    def baseline_for(self, sae_id: str) -> tuple[SaeResults | str, str]:
        """``(results, label)`` of the baseline entry for ``sae_id``, or ``(why not, label)``.

        Raises :class:`SaebenchError` for a baseline file that is not a results JSON, and
        :class:`EvaluationFailed` when a ``ckpt:`` baseline cannot be evaluated.
        """
        found = self.comparison_for(sae_id)
        return found if isinstance(found, tuple) else (found.entry, found.label)

    def comparison_for(self, sae_id: str) -> Any:
        """What ``sae_id`` is compared with (baseline.Comparison), or ``(why not, label)``."""
        return self.baseline().comparison_for(sae_id)

    def baseline(self) -> Any:
        """The run's baseline.Baselines (made on first use)."""
        if self.baselines is None:
            from pytest_saebench.baseline import Baselines

            self.baselines = Baselines(self)
        return self.baselines

    # -- loading -----------------------------------------------------------------------
    def loaded_sae(self, sae_id: str):
        """The validated, folded SAE of ``sae_id`` (loaded once)."""
        if sae_id not in self._loaded:
            from pytest_saebench.loading.sae import load_sae

            ref = self.ref(sae_id)
            if ref.error is not None:  # a sweep member that could not be read
                raise SaebenchError(ref.error)
            if ref.meta.get("hook_head_index") is not None:
                raise SaebenchError(f"{ref.where()}: hook_head_index SAEs are not "
                                    "supported yet; evaluate a full-width hook")
            self._loaded[sae_id] = load_sae(ref, self.device)
        return self._loaded[sae_id]

    def model_for(self, sae_id: str):
        """The HookedTransformer for ``sae_id``, shared between checkpoints of one model."""
        return self.inputs.model_for(self.ref(sae_id))

    def dataset_for(self, sae_id: str) -> str:
        """The dataset ``sae_id`` is evaluated on (see :meth:`Inputs.dataset_for`)."""
        return self.inputs.dataset_for(self.ref(sae_id))

    def tensor_cache(self):
        """The cache of SAE-independent tensors (on disk unless disabled)."""
        if self.cache is None:
            from pytest_saebench.cache import TensorCache

            s = self.settings
            root = Path(s.cache_dir) if s.cache_dir and s.cache else None
            self.cache = TensorCache(root, s.cache_size_mb << 20)
        return self.cache

    def discard_results(self) -> None:
        """Forget computed results but keep models and cached tensors (for benchmarks)."""
        self._results.clear()
        self._failures.clear()

    def _model_key(self, model) -> str:
        return self.inputs.model_key(model)

    # -- evaluation --------------------------------------------------------------------
    def results(self, sae_id: str, evals: list[str] | None = None,
                suite: str | None = None) -> SaeResults:
        """Results of ``sae_id`` with at least ``evals`` (default: all of ``suite``'s).

        Raises :class:`EvaluationFailed` if a requested eval failed, now or earlier.
        """
        suite = suite or self.settings.suite
        if (self.shared_dir is not None and evals is None and suite == self.settings.suite
                and (sae_id, suite) not in self._results):
            return self._shared_results(sae_id, suite)
        configs = self.configs_for(suite)
        names = self.default_evals(suite) if evals is None else list(evals)
        for name in names:
            if name not in configs:
                raise SaebenchError(f"eval '{name}' is not part of suite '{suite}' "
                                    f"(it runs {', '.join(configs)})")
        for name in names:
            failure = self._failures.get((sae_id, suite, name))
            if failure is not None:
                raise EvaluationFailed(f"evaluation of '{sae_id}' failed: {failure}")
            res = self._results.get((sae_id, suite))
            if res is None or self.eval_type(name) not in res.evals:
                try:
                    self._run_eval(sae_id, suite, name, configs[name])
                except Exception as exc:
                    self._failures[(sae_id, suite, name)] = exc
                    raise
        return self._results[(sae_id, suite)]

    def _shared_results(self, sae_id: str, suite: str) -> SaeResults:
        """Evaluate under the checkpoint's lock unless another worker already did."""
        from pytest_saebench import shared

        sha = self.ref(sae_id).sha256
        with shared.lock(self.shared_dir, sha, suite):
            stored = shared.read(self.shared_dir, sha, suite)
            if stored is None:
                try:
                    stored = self.results(sae_id, self.default_evals(suite), suite)
                    stored.evaluated_by = self.worker_id
                except (SaebenchError, EvaluationFailed) as exc:
                    stored = str(exc)
                shared.write(self.shared_dir, sha, suite, stored, sae_id, self.worker_id)
        if isinstance(stored, str):
            message = stored.removeprefix(f"evaluation of '{sae_id}' failed: ")
            self._failures[(sae_id, suite, "*")] = SaebenchError(message)
            raise EvaluationFailed(f"evaluation of '{sae_id}' failed: {message}")
        self._results[(sae_id, suite)] = stored
        return stored

    def load_shared(self) -> dict[str, int]:
        """Controller side: read every checkpoint's shared results; returns how many times
        each was evaluated."""
        from pytest_saebench import shared

        suite = self.settings.suite
        for sae_id, ref in self.checkpoints.items():
            stored = shared.read(self.shared_dir, ref.sha256, suite)
            if isinstance(stored, SaeResults):
                self._results[(sae_id, suite)] = stored
            elif isinstance(stored, str):
                self._failures[(sae_id, suite, "*")] = SaebenchError(stored)
        return shared.evaluation_counts(self.shared_dir)

    def judge(self) -> Any:
        """The hook's autointerp judge (asked once per run, so usage accumulates), or None."""
        if self._judge is _UNASKED:
            self._judge = self.judge_provider() if self.judge_provider else None
        return self._judge

    def eval_type(self, name: str) -> str:
        """The SAEBench eval type id (metric id prefix) of eval ``name``."""
        from pytest_saebench.evals import get_eval

        return get_eval(name).EVAL_TYPE_ID

    def _run_eval(self, sae_id: str, suite: str, name: str, config: Any) -> None:
        import torch

        from pytest_saebench.evals import get_eval
        from pytest_saebench.evals.base import EvalContext, combine_repeats
        from pytest_saebench.loading.model import check_hook
        from pytest_saebench.results import environment

        ref = self.ref(sae_id)
        res = self._results.get((sae_id, suite))
        if res is None:
            from pytest_saebench.loading.runs import run_record

            res = SaeResults(sae_id, ref.shown_path, ref.sha256, suite,
                             sae_cfg=ref.cfg,
                             env=environment(self.device, self.settings.dtype,
                                             self.settings.seed, self.threads),
                             run=run_record(sae_id, ref.source))
        started = time.perf_counter()
        # a null reference evaluates only the evals its gates read, each on its own
        planned = [name] if sae_id.startswith("null:") else self.default_evals(suite)
        if self.progress is not None:
            self.progress.started(sae_id, name, sum(self.eval_type(n) in res.evals
                                                    for n in planned), len(planned))
        loaded = self.loaded_sae(sae_id)
        module = get_eval(name)
        spec = self.dataset_for(sae_id)
        if getattr(module, "NEEDS_MODEL", True):
            model = self.model_for(sae_id)
            res.inputs["model"] = self.inputs.model_record(ref)
            check_hook(model, loaded.hook, loaded.d_in, ref.where())
            if loaded.hook_out is not None:
                check_hook(model, loaded.hook_out, loaded.d_out, ref.where(), "d_out")
            tok = model.tokenizer
            special = frozenset(i for i in (tok.pad_token_id, tok.eos_token_id,
                                            tok.bos_token_id) if i is not None)
        else:  # e.g. synthetic ground truth: the checkpoint alone is evaluated
            model, special = None, frozenset()
        seeds = [self.settings.seed + i for i in range(max(1, self.settings.repeats))]
        why_not = getattr(module, "NOT_FOR_TRANSCODERS", None)
        if loaded.is_transcoder and why_not:
            res.evals[module.EVAL_TYPE_ID] = _not_applicable(module, why_not)
            self._results[(sae_id, suite)] = res
            return
        if self._sae_memo[0] != sae_id:
            self._sae_memo = (sae_id, {})
        res.inputs["sae"] = loaded.record()
        from pytest_saebench.adaptive import stopper

        stop = stopper(self, sae_id, suite, module, len(seeds))
        outs = []
        for seed in seeds:
            tokens, data_key = (self.inputs.token_source(model, ref, spec, seed)
                                if model is not None else (None, spec))
            ctx = EvalContext(loaded=loaded, model=model, tokens=tokens, device=self.device,
                              seed=seed, special_ids=special, dataset=spec, memo=self._memo,
                              sae_memo=self._sae_memo[1],
                              cache=self.tensor_cache(),
                              model_key=self._model_key(model) if model is not None else "",
                              dataset_key=data_key, judge=self.judge, stop_when_decided=stop)
            torch.manual_seed(seed)
            outs.append(self._evaluate(module, ctx, config, sae_id, name, res.env))
        if self.inputs.opened(spec):
            res.inputs["dataset"] = self.inputs.dataset_source(spec).record()
        res.evals[module.EVAL_TYPE_ID] = outs[0] if len(outs) == 1 else combine_repeats(
            outs, seeds)
        took = time.perf_counter() - started
        res.seconds += took
        if self.progress is not None:
            done = sum(self.eval_type(n) in res.evals for n in planned)
            self.progress.finished(sae_id, name, took, done, len(planned), res.seconds)
        self._results[(sae_id, suite)] = res

    def _evaluate(self, module: Any, ctx: Any, config: Any, sae_id: str, name: str,
                  env: dict[str, Any]) -> Any:
        """``module.run``, or for a null reference its result from an earlier run."""
        from pytest_saebench import null

        if not sae_id.startswith(null.NULL_PREFIX):
            return module.run(ctx, config)
        parts = {"config": dataclasses.asdict(config) if dataclasses.is_dataclass(config)
                 else config, "env": env, "model": ctx.model_key, "data": ctx.dataset_key,
                 "seed": ctx.seed}
        path = null.cache_file(self._null_root(), sae_id, name, parts)
        out = null.read_cached(path)
        if out is None:
            out = module.run(ctx, config)
            null.write_cached(path, out)
        return out


def _not_applicable(module: Any, why: str) -> Any:
    """An eval's result for a transcoder it cannot measure: every id not computed."""
    from pytest_saebench.evals.base import EvalResult

    res = EvalResult(module.EVAL_TYPE_ID, {"not_applicable": why})
    for spec in module.METRICS:
        res.not_computed[spec.id] = f"does not apply to a transcoder: {why}"
    return res
