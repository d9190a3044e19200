"""Metric registry: canonical SAEBench ids, directions and aliases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pytest_saebench.errors import SaebenchError, did_you_mean

Direction = Literal["up", "down", "band", "info"]
ARROWS: dict[str, str] = {"up": "↑", "down": "↓", "band": "band", "info": "info"}


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its canonical id ``<eval_type_id>.<category>.<key>`` and how to read it."""

    id: str
    direction: Direction
    title: str = ""
    unit: str = ""
    # Gates on metrics known to be unreliable (SCR, TPP) warn unless the user says otherwise.
    default_severity: str = "error"
    # A gate every run gets unless configured otherwise (e.g. properties must hold: min 1).
    default_min: float | None = None
    # Wall-clock and other run-dependent values: recorded, never compared with a baseline.
    volatile: bool = False
    # Shown beside the value where a reader would otherwise misread it (a bug-compatible id
    # next to the corrected one).
    note: str = ""
    # For a metric without a standard error: "down" if it never rises as an eval reads more
    # of its budget (the fraction of dead latents), "up" if it never falls; an adaptive
    # budget may then stop on it (gates.budget).
    monotone: str = ""

    @property
    def eval_type_id(self) -> str:
        """The SAEBench eval type id (first component)."""
        return self.id.split(".", 1)[0]

    @property
    def category(self) -> str:
        """The category key under ``eval_result_metrics``."""
        return self.id.split(".")[1]

    @property
    def key(self) -> str:
        """The metric key inside its category."""
        return self.id.split(".", 2)[2]


class MetricRegistry(Mapping[str, MetricSpec]):
    """Canonical ids plus unique short aliases (``l0``, ``core.l0``)."""

    def __init__(self, specs: Iterable[MetricSpec], eval_aliases: Mapping[str, str] | None = None):
        self._specs: dict[str, MetricSpec] = {}
        for spec in specs:
            if spec.id.count(".") < 2:
                raise ValueError(f"metric id {spec.id!r} is not <eval>.<category>.<key>")
            self._specs[spec.id] = spec
        candidates: dict[str, set[str]] = {}
        short_eval = {v: k for k, v in (eval_aliases or {}).items()}
        for spec in self._specs.values():
            names = {spec.key, f"{spec.eval_type_id}.{spec.key}"}
            if spec.eval_type_id in short_eval:
                alias = short_eval[spec.eval_type_id]
                names |= {f"{alias}.{spec.key}", f"{alias}.{spec.category}.{spec.key}"}
            for name in names - {spec.id}:
                candidates.setdefault(name, set()).add(spec.id)
        self._aliases = {k: next(iter(v)) for k, v in candidates.items() if len(v) == 1}

    def __getitem__(self, key: str) -> MetricSpec:
        return self._specs[key]

    def __iter__(self):
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def resolve(self, name: str) -> str:
        """Return the canonical id for ``name`` (an id or a unique alias).

        Raises :class:`SaebenchError` with a "did you mean" hint for an unknown name.
        """
        if name in self._specs:
            return name
        if name in self._aliases:
            return self._aliases[name]
        hint = did_you_mean(name, [*self._specs, *self._aliases])
        raise SaebenchError(f"unknown metric id '{name}'{hint}")
