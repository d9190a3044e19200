"""The statistics a gate decides with (STATISTICS.md), torch-free: plain floats and lists.

An eval records, per phase, a table of *units* (core: contiguous groups of contexts; the
mean-type evals: datasets, classes, letters) with additive sums per unit and a fingerprint of
each unit's inputs, and for each metric a :class:`Formula` over those sums. From them:

- a metric's value and grouped-jackknife standard error on any subset of units;
- the standard error of the *difference* between two runs over the units both evaluated with
  identical inputs (equal fingerprints): noise the runs share cancels;
- critical values from Student's t (the jackknife over G units has about G - 1 degrees of
  freedom) for a two-sided tail equal to that of the user's ``z`` under the normal;
- per-look critical values for budgets evaluated in growing prefixes (alpha spending).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Units:
    """Per-unit additive sums of one phase: ``sums[u][k]`` is key ``keys[k]`` summed over
    unit ``u``; ``fingerprints[u]`` identifies the unit's inputs."""

    kind: str
    keys: tuple[str, ...]
    sums: tuple[tuple[float, ...], ...]
    fingerprints: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.sums)

    def totals(self, keep: Iterable[int] | None = None) -> dict[str, float]:
        """Each key summed over the units ``keep`` (default: all)."""
        rows = self.sums if keep is None else [self.sums[u] for u in keep]
        return {k: math.fsum(r[i] for r in rows) for i, k in enumerate(self.keys)}

    def to_json(self) -> dict[str, Any]:
        """A JSON object (sums rounded to 12 significant digits to stay small)."""
        return {"kind": self.kind, "keys": list(self.keys),
                "sums": [[float(f"{x:.12g}") for x in row] for row in self.sums],
                "fingerprints": list(self.fingerprints)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Units:
        """Inverse of :meth:`to_json`; raises ValueError for a malformed table."""
        keys = tuple(str(k) for k in data["keys"])
        sums = tuple(tuple(float(x) for x in row) for row in data["sums"])
        prints = tuple(str(f) for f in data["fingerprints"])
        if len(prints) != len(sums) or any(len(row) != len(keys) for row in sums):
            raise ValueError("units: sums, keys and fingerprints disagree in length")
        return cls(str(data.get("kind", "unit")), keys, sums, prints)


@dataclass(frozen=True)
class Formula:
    """``value = const + scale * (sum_k num[k] S_k) / (sum_k den[k] S_k)`` over the sums
    ``S`` of table ``table``: every metric with a standard error is one (a mean is
    ``{v: 1} / {count: 1}``; a score ``1 - a / b`` is ``const 1, scale -1``)."""

    table: str
    num: Mapping[str, float]
    den: Mapping[str, float]
    const: float = 0.0
    scale: float = 1.0
    # Keys whose per-unit sums depend on the inputs alone but are taken about a mean over the
    # run's own units (core's sum of squares about the activations' mean): two runs over
    # nested prefixes of the same windows pair them about the shorter run's mean, from its sums.
    shared: tuple[str, ...] = ()

    def __call__(self, totals: Mapping[str, float]) -> float:
        den = math.fsum(w * totals[k] for k, w in self.den.items())
        if den == 0 or not math.isfinite(den):
            return math.nan
        return self.const + self.scale * math.fsum(w * totals[k] for k, w in self.num.items()) / den

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {"table": self.table, "num": dict(self.num), "den": dict(self.den),
                "const": self.const, "scale": self.scale,
                **({"shared": list(self.shared)} if self.shared else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Formula:
        """Inverse of :meth:`to_json`."""
        return cls(str(data["table"]), {str(k): float(v) for k, v in data["num"].items()},
                   {str(k): float(v) for k, v in data["den"].items()},
                   float(data.get("const", 0.0)), float(data.get("scale", 1.0)),
                   tuple(str(k) for k in data.get("shared", ())))


@dataclass(frozen=True)
class Estimate:
    """A value, its standard error (None when it cannot be estimated) and the units and
    degrees of freedom behind it."""

    value: float
    stderr: float | None
    n_units: int
    df: int | None = None


def jackknife(formula: Formula, units: Units, keep: Sequence[int] | None = None) -> Estimate:
    """The formula's value on the units ``keep`` (default: all) and its grouped-jackknife
    standard error, each unit its own group (STATISTICS.md §1)."""
    idx = list(range(len(units))) if keep is None else list(keep)
    total = units.totals(idx)
    value = formula(total)
    if len(idx) < 2 or not math.isfinite(value):
        return Estimate(value, None, len(idx))
    loo = [formula({k: total[k] - units.sums[u][i] for i, k in enumerate(units.keys)})
           for u in idx]
    return Estimate(value, _jackknife_se(loo), len(idx), len(idx) - 1)


def _jackknife_se(loo: Sequence[float]) -> float | None:
    if not all(math.isfinite(x) for x in loo):
        return None
    n = len(loo)
    mean = math.fsum(loo) / n
    return math.sqrt((n - 1) / n * math.fsum((x - mean) ** 2 for x in loo))


@dataclass(frozen=True)
class Difference:
    """``new - old`` of one metric over the units both runs evaluated with identical inputs,
    with the standard error of the difference (STATISTICS.md §2)."""

    delta: float
    stderr: float | None
    n_paired: int
    n_new: int
    n_old: int

    @property
    def df(self) -> int | None:
        """Degrees of freedom of the jackknife t-statistic."""
        return self.n_paired - 1 if self.n_paired >= 2 else None


def paired_difference(formula: Formula, new: Units, old: Units,
                      old_formula: Formula | None = None) -> Difference | None:
    """The paired difference over the units whose fingerprints match, or None when none do
    (or the two tables do not hold the formula's sums)."""
    old_formula = old_formula or formula
    where = {fp: u for u, fp in enumerate(old.fingerprints)}
    pairs = [(u, where[fp]) for u, fp in enumerate(new.fingerprints) if fp in where]
    needed = set(formula.num) | set(formula.den)
    if not pairs or not needed <= set(new.keys) or \
            not set(old_formula.num) | set(old_formula.den) <= set(old.keys):
        return None
    a_idx, b_idx = [p[0] for p in pairs], [p[1] for p in pairs]
    t_new, t_old = new.totals(a_idx), old.totals(b_idx)
    shared = _shared_source(formula, old_formula, pairs, new, old)
    if shared is not None:
        keys, side, index = shared
        for k in keys:
            t_new[k] = t_old[k] = side.totals([index(p) for p in pairs])[k]
    delta = formula(t_new) - old_formula(t_old)
    if len(pairs) < 2 or not math.isfinite(delta):
        return Difference(delta, None, len(pairs), len(new), len(old))
    loo = []
    for a, b in pairs:
        n_loo = {k: t_new[k] - new.sums[a][i] for i, k in enumerate(new.keys)}
        o_loo = {k: t_old[k] - old.sums[b][i] for i, k in enumerate(old.keys)}
        if shared is not None:
            keys, side, index = shared
            for k in keys:
                unit = index((a, b))
                n_loo[k] = o_loo[k] = t_new[k] - side.sums[unit][side.keys.index(k)]
        loo.append(formula(n_loo) - old_formula(o_loo))
    return Difference(delta, _jackknife_se(loo), len(pairs), len(new), len(old))


def _shared_source(formula: Formula, old_formula: Formula, pairs: list[tuple[int, int]],
                   new: Units, old: Units) -> tuple[set[str], Units, Any] | None:
    """For a formula with shared keys: ``(keys, table, unit of a pair)`` whose sums both
    runs use, the run's all of whose units are paired (the shorter of two nested prefixes:
    its sums are about the paired units' own mean); None when neither is wholly paired."""
    keys = set(formula.shared) & set(old_formula.shared)
    if not keys:
        return None
    if len(pairs) == len(old) and keys <= set(old.keys):
        return keys, old, lambda p: p[1]
    if len(pairs) == len(new) and keys <= set(new.keys):
        return keys, new, lambda p: p[0]
    return None


# -- critical values ----------------------------------------------------------------------

def two_sided_alpha(z: float) -> float:
    """The two-sided tail of the standard normal beyond ``z`` (z = 3: 0.0027)."""
    return math.erfc(z / math.sqrt(2))


def normal_quantile(p: float) -> float:
    """The standard normal's ``p`` quantile (bisection on ``erfc``, to float precision)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):  # bisection on erfc: monotone, exact to float precision
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


@functools.lru_cache(maxsize=4096)
def critical(z: float, df: int | None = None, alpha: float | None = None) -> float:
    """The two-sided critical value for the tail ``alpha`` (default: that of ``z`` under the
    normal) with Student's t at ``df`` degrees of freedom (None: the normal)."""
    alpha = two_sided_alpha(z) if alpha is None else alpha
    if df is None:
        return -normal_quantile(alpha / 2)
    if df < 1:
        return math.inf
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > alpha / 2:
        hi *= 2
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > alpha / 2:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def one_sided_level(c: float, df: int | None) -> float:
    """The one-sided tail beyond the critical value ``c`` (Student's t at ``df``, else the
    normal): the level a fail test with that critical value is run at."""
    if df is None:
        return 0.5 * math.erfc(c / math.sqrt(2))
    return t_sf(c, df)


def one_sided_p(t: float, df: int | None) -> float:
    """The one-sided p-value of a fail test's statistic ``t``."""
    return one_sided_level(t, df)


# -- looks at growing prefixes (STATISTICS.md §4) -------------------------------------------

def obrien_fleming_spent(alpha: float, fraction: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: the share of the two-sided ``alpha`` spent
    by information fraction ``fraction`` (0 < fraction <= 1), ``2 - 2 Phi(z_{a/2} / sqrt(t))``."""
    if fraction >= 1:
        return alpha
    z = -normal_quantile(alpha / 2)
    return math.erfc(z / math.sqrt(fraction) / math.sqrt(2))


def pocock_spent(alpha: float, fraction: float) -> float:
    """Lan-DeMets Pocock-type spending: ``alpha · ln(1 + (e - 1) t)`` by information fraction
    ``t``, which spends more early than O'Brien-Fleming's and so lets a clear verdict stop
    at an early look."""
    return alpha if fraction >= 1 else alpha * math.log1p((math.e - 1) * fraction)


SPENDING = {"pocock": pocock_spent, "obrien-fleming": obrien_fleming_spent}


@dataclass(frozen=True)
class Looks:
    """The looks of an adaptive budget: information fractions and each look's two-sided tail.
    Each look spends the increment of the spending function at its fraction, and its interval
    uses that increment as its own level, so the chance of any false verdict over all looks is
    at most the sum of the increments, ``alpha`` (a union bound: valid whatever the
    correlation between looks, and conservative)."""

    fractions: tuple[float, ...]
    alphas: tuple[float, ...] = field(default=())

    @classmethod
    def spending(cls, z: float, fractions: Sequence[float], kind: str = "obrien-fleming"
                 ) -> Looks:
        """Looks at ``fractions`` (increasing, ending at 1) spending the tail of ``z`` with
        the spending function ``kind`` (:data:`SPENDING`)."""
        fr = tuple(float(f) for f in fractions)
        if not fr or fr[-1] != 1.0 or any(b <= a for a, b in zip(fr, fr[1:], strict=False)) \
                or fr[0] <= 0:
            raise ValueError(f"look fractions must increase to 1, got {list(fractions)}")
        alpha = two_sided_alpha(z)
        spent = [SPENDING[kind](alpha, f) for f in fr]
        steps = [spent[0], *(b - a for a, b in zip(spent, spent[1:], strict=False))]
        return cls(fr, tuple(max(s, 1e-300) for s in steps))

    def critical(self, look: int, df: int | None) -> float:
        """The critical value of look ``look`` (0-based) at ``df`` degrees of freedom."""
        return critical(0.0, df, alpha=self.alphas[look])


# -- the three-way verdict (STATISTICS.md §3) ------------------------------------------------

def verdict(bad: float, stderr: float | None, bound: float, c: float | None) -> str:
    """``fail`` when the whole interval ``bad ± c·stderr`` lies beyond ``bound`` (``bad`` is
    how far the metric is on its bad side: a value below a min, above a max, a drop),
    ``pass`` when it lies wholly on the good side, ``inconclusive`` when it holds the bound.
    Without ``c`` (no ``z``) or a standard error, the point decides: today's behaviour."""
    if c is None or stderr is None or not math.isfinite(stderr):
        return "fail" if bad > bound else "pass"
    width = c * stderr
    if bad - width > bound:
        return "fail"
    if bad + width <= bound:
        return "pass"
    return "inconclusive"
