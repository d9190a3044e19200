"""properties: contracts of the SAE itself, checked with hypothesis (no SAEBench counterpart).

Inputs are batches built from real activations of the evaluated model (scaled from 0 to 1e4,
optionally with noise) and from plain Gaussian rows. Each property is a metric equal to 1.0
when it holds on every generated batch; otherwise 0.0, with hypothesis' shrunk (smallest)
counterexample as the reason. Each gets a gate item by default (``min = 1``). Properties that
do not apply to the architecture are reported as not computed, so their gates skip.
Searches are derandomized and bounded (``max_examples``): same SAE, same verdict.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from pytest_saebench.activations import hook_activations
from pytest_saebench.evals.base import EvalContext, EvalResult
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "properties"
READS_DATASET = True  # the checkpoint's dataset: checked at start-up (inputs.preflight)
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "its contracts compare the reconstruction with the input activation")
SCALES = (0.0, 1e-3, 1.0, 10.0, 1e4)


@dataclass(frozen=True)
class Config:
    """Search budget of the property checks."""

    max_examples: int = 60
    max_rows: int = 8
    n_reference_contexts: int = 8
    context_size: int = 32
    tolerance: float = 1e-4  # batch invariance: |diff| <= tol * (1 + max |code|)


PRESETS = {"fast": Config(max_examples=30), "standard": Config(), "full": Config(max_examples=200)}

PROPERTIES = {
    "shapes_and_dtypes": "encode/decode shapes and dtypes",
    "finite_outputs": "no NaN/inf for finite inputs",
    "batch_invariance": "a batch encodes like each row alone",
    "determinism": "encoding twice gives identical codes",
    "decoder_rows": "decoder rows finite and non-zero (unit if promised)",
    "zero_input": "encode(0) is finite and sparse as promised",
    "respects_k": "TopK: at most k latents per row",
    "thresholds_nonnegative": "JumpReLU thresholds >= 0",
}
METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(f"properties.checks.{name}", "up", title, default_min=1.0)
    for name, title in PROPERTIES.items())


@dataclass(frozen=True)
class Row:
    """One generated input row: a reference activation (or Gaussian noise) times a scale."""

    source: int  # index into the reference activations; -1: Gaussian row
    scale: float
    noise: bool

    def __repr__(self) -> str:
        what = "gaussian" if self.source < 0 else f"activation[{self.source}]"
        return f"{what} x {self.scale:g}" + (" + noise" if self.noise else "")


def rows_strategy(n_reference: int, max_rows: int) -> st.SearchStrategy[list[Row]]:
    """Batches of 1..max_rows rows; shrinks towards one plain activation at scale 0."""
    row = st.builds(Row, st.integers(-1, n_reference - 1), st.sampled_from(SCALES),
                    st.booleans())
    return st.lists(row, min_size=1, max_size=max_rows)


class Inputs:
    """Turns generated rows into a float32 batch, deterministically."""

    def __init__(self, reference: torch.Tensor, seed: int):
        self.reference = reference
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(reference.shape, generator=gen)
        self.gauss = torch.randn(reference.shape, generator=gen) * reference.std()

    def batch(self, rows: list[Row]) -> torch.Tensor:
        """The ``[len(rows), d_in]`` input described by ``rows``."""
        out = []
        for r in rows:
            base = self.gauss[0] if r.source < 0 else self.reference[r.source]
            x = base * r.scale
            if r.noise:
                x = x + self.noise[max(r.source, 0)] * 0.1 * (1 + r.scale)
            out.append(x)
        return torch.stack(out).float()


def search(check: Callable[[list[Row]], str | None], strategy, cfg: Config) -> str | None:
    """None if ``check`` holds on every generated batch; else hypothesis' shrunk
    counterexample and what went wrong on it."""
    conf = settings(max_examples=cfg.max_examples, derandomize=True, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate, Phase.shrink])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = find(strategy, lambda rows: check(rows) is not None, settings=conf)
    except NoSuchExample:
        return None
    return f"counterexample (shrunk) {rows}: {check(rows)}"


@torch.inference_mode()
def checks(sae, inputs: Inputs, cfg: Config, k: int | None) -> dict[str, Callable]:
    """Input-dependent properties: name -> ``rows -> None | what went wrong``."""
    d_in, d_sae = int(sae.cfg.d_in), int(sae.cfg.d_sae)
    device = sae.W_dec.device

    def enc(x: torch.Tensor) -> torch.Tensor:
        return sae.encode(x.to(device, sae.dtype)).float().cpu()

    def shapes(rows):
        x = inputs.batch(rows)
        f = sae.encode(x.to(device, sae.dtype))
        out = sae.decode(f)
        if tuple(f.shape) != (len(rows), d_sae) or tuple(out.shape) != (len(rows), d_in):
            return f"encode gave {list(f.shape)}, decode {list(out.shape)}"
        if f.dtype != sae.dtype or out.dtype != sae.dtype:
            return f"dtypes {f.dtype}/{out.dtype}, expected {sae.dtype}"
        return None

    def finite(rows):
        f = enc(inputs.batch(rows))
        out = sae.decode(f.to(device, sae.dtype)).float()
        if not torch.isfinite(f).all():
            return f"{int((~torch.isfinite(f)).sum())} non-finite code value(s)"
        if not torch.isfinite(out).all():
            return f"{int((~torch.isfinite(out)).sum())} non-finite reconstruction value(s)"
        return None

    def batch_invariant(rows):
        x = inputs.batch(rows)
        together = enc(x)
        alone = torch.cat([enc(x[i:i + 1]) for i in range(len(rows))])
        diff = float((together - alone).abs().max())
        bound = cfg.tolerance * (1 + float(alone.abs().max()))
        return None if diff <= bound else f"max |batch - row alone| = {diff:.3g} > {bound:.3g}"

    def deterministic(rows):
        x = inputs.batch(rows)
        a, b = enc(x), enc(x)
        return None if torch.equal(a, b) else f"max |difference| {float((a - b).abs().max()):.3g}"

    out = {"shapes_and_dtypes": shapes, "finite_outputs": finite,
           "batch_invariance": batch_invariant, "determinism": deterministic}
    if k is not None:
        def respects_k(rows):
            l0 = (enc(inputs.batch(rows)) != 0).sum(-1)
            worst = int(l0.max())
            return None if worst <= k else f"a row has {worst} active latents > k = {k}"
        out["respects_k"] = respects_k
    return out


@torch.inference_mode()
def static_checks(sae, promise_unit: bool, k: int | None) -> dict[str, str | None]:
    """Properties of the weights alone: name -> None (holds) or what is wrong."""
    out: dict[str, str | None] = {}
    norms = sae.W_dec.detach().float().norm(dim=-1)
    bad = (~torch.isfinite(norms)) | (norms == 0)
    if bad.any():
        out["decoder_rows"] = (f"{int(bad.sum())} decoder row(s) zero or non-finite, e.g. "
                               f"latent {int(bad.nonzero()[0])}")
    elif promise_unit and float((norms - 1).abs().max()) > 1e-3:
        out["decoder_rows"] = (f"cfg promises unit-norm decoder rows but max | ||row|| - 1 | = "
                               f"{float((norms - 1).abs().max()):.3g}")
    else:
        out["decoder_rows"] = None
    zero = sae.encode(torch.zeros(1, int(sae.cfg.d_in), device=sae.W_dec.device,
                                  dtype=sae.dtype)).float()
    active = int((zero != 0).sum())
    if not torch.isfinite(zero).all():
        out["zero_input"] = "encode(0) is not finite"
    elif k is not None and active > k:
        out["zero_input"] = f"encode(0) has {active} active latents > k = {k}"
    else:
        out["zero_input"] = None
    threshold = getattr(sae, "threshold", None)
    if threshold is not None:
        t = threshold.detach().float()
        out["thresholds_nonnegative"] = (None if bool((t >= 0).all()) else
                                         f"{int((t < 0).sum())} negative threshold(s), min "
                                         f"{float(t.min()):.3g}")
    return out


def reference_activations(ctx: EvalContext, cfg: Config) -> torch.Tensor:
    """``[n, d_in]`` real activations: the first few positions of some token windows (once per
    run for a model, hook and seed)."""
    key = (f"properties/{id(ctx.model)}/{ctx.loaded.hook.name}/{ctx.seed}/"
           f"{cfg.n_reference_contexts}/{cfg.context_size}/{ctx.loaded.ref.prepend_bos}")
    if key not in ctx.memo:
        ctx.memo[key] = _reference_activations(ctx, cfg)
    return ctx.memo[key]


def _reference_activations(ctx: EvalContext, cfg: Config) -> torch.Tensor:
    tokens = ctx.tokens(cfg.n_reference_contexts, cfg.context_size, ctx.loaded.ref.prepend_bos)
    acts = hook_activations(ctx.model, tokens.to(ctx.device), ctx.loaded.hook).cpu()
    return acts[:, 1:5].reshape(-1, acts.shape[-1])  # skip BOS: its norm is atypical


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Check every applicable property of the loaded SAE."""
    sae, ref = ctx.loaded.sae, ctx.loaded.ref
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name,
                                    "search": "hypothesis.find, derandomized"})
    arch = ctx.loaded.architecture
    k = int(sae.cfg.k) if arch == "topk" and getattr(sae.cfg, "k", None) else None
    reference = reference_activations(ctx, cfg)
    found = {name: search(fn, rows_strategy(len(reference), cfg.max_rows), cfg)
             for name, fn in checks(sae, Inputs(reference, ctx.seed), cfg, k).items()}
    found.update(static_checks(sae, bool(ref.meta.get("normalize_sae_decoder")), k))
    not_applicable = {
        "respects_k": f"architecture '{arch}' has no per-row k"
                      + (" (BatchTopK keeps k only on average over a training batch)"
                         if arch == "batchtopk" else ""),
        "thresholds_nonnegative": f"architecture '{arch}' has no thresholds",
    }
    for name in PROPERTIES:
        metric = f"{EVAL_TYPE_ID}.checks.{name}"
        if name not in found:
            res.metrics[metric] = None
            res.not_computed[metric] = not_applicable[name]
        elif found[name] is None:
            res.set(metric, 1.0)
        else:
            res.set(metric, 0.0)
            res.reasons[metric] = found[name]
    res.unstructured = {"violations": {k_: v for k_, v in found.items() if v},
                        "reference_rows": int(reference.shape[0])}
    return res

