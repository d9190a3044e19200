"""synthetic: how well a checkpoint trained on synthetic activations recovers the planted
dictionary (no language model). The checkpoint names its data in ``metadata.dataset_path`` as
``synthetic:n_features=64,d=32,p_active=0.03,seed=0`` (fields of
:class:`~pytest_saebench.synthetic.SyntheticConfig`); for any other checkpoint the metrics are
not computed and their gates skip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals.base import EvalContext, EvalResult
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "synthetic"
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "its planted dictionary lives in the input space, a transcoder decodes into another")
NEEDS_MODEL = False
PREFIX = "synthetic:"


@dataclass(frozen=True)
class Config:
    """Samples used to measure code correlation (MCC) and the cosine for "recovered"."""

    n_samples: int = 20_000
    recovered_cosine: float = 0.9


PRESETS = {"fast": Config(n_samples=5_000), "standard": Config(), "full": Config(n_samples=100_000)}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("synthetic.recovery.mean_max_cosine", "up", "mean best cosine, planted features"),
    MetricSpec("synthetic.recovery.frac_recovered", "up", "planted features recovered"),
    MetricSpec("synthetic.recovery.mcc", "up", "mean code correlation (matched)"),
)


def parse_spec(spec: str, where: str):
    """``synthetic:key=value,...`` -> :class:`SyntheticConfig` (clear error on a bad field)."""
    from pytest_saebench.synthetic import SyntheticConfig

    fields = {f.name: f.type for f in dataclasses.fields(SyntheticConfig)}
    values = {}
    for item in filter(None, spec[len(PREFIX):].split(",")):
        key, _, raw = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise SaebenchError(f"{where}: unknown synthetic field '{key}' (fields: "
                                f"{', '.join(fields)})")
        try:
            values[key] = float(raw) if fields[key] in (float, "float") else int(raw)
        except ValueError:
            raise SaebenchError(f"{where}: synthetic field '{key}' has bad value '{raw}'") from None
    return SyntheticConfig(**values)


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Score the checkpoint's decoder and codes against the dictionary it was trained on."""
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "dataset": ctx.dataset})
    if not ctx.dataset.startswith(PREFIX):
        why = ("the checkpoint was not trained on synthetic data (metadata.dataset_path is not "
               "'synthetic:...')")
        for spec in METRICS:
            res.metrics[spec.id] = None
            res.not_computed[spec.id] = why
        return res
    from pytest_saebench.synthetic import generate

    synth = parse_spec(ctx.dataset, f"{ctx.loaded.ref.path}/cfg.json metadata.dataset_path")
    if synth.d != ctx.loaded.d_in:
        raise SaebenchError(f"{ctx.loaded.ref.path}/cfg.json: d_in={ctx.loaded.d_in} but the "
                            f"synthetic data has d={synth.d}")
    data = generate(synth, cfg.n_samples)
    scores = data.score(ctx.loaded.sae, threshold=cfg.recovered_cosine)
    for key, value in scores.items():
        res.set(f"{EVAL_TYPE_ID}.recovery.{key}", value)
    res.unstructured = {"synthetic_config": dataclasses.asdict(synth)}
    return res
