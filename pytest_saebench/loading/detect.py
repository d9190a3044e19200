"""Which checkpoint format a directory holds, judged by the files in it (no torch).

Each format names the files it needs, so a directory that matches none gets one error that
lists them beside what was found. Order matters where layouts overlap: a SAELens folder also
holds one ``.json`` and one ``.safetensors`` (the raw layout), Gemma Scope 2 too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Files that only a checkpoint holds: a folder with one of them that matches no format is a
# broken checkpoint, not an unrelated folder of a sweep.
MARKERS = ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "ae.pt", "params.npz",
           "params.safetensors", "hyperparams.json")
# sparsify writes training state beside its hookpoint folders; never a Goodfire SAE.
_STATE_FILES = ("state.pt",)
_STATE_PREFIXES = ("optimizer_", "lr_scheduler_")


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda p: all((p / n).is_file() for n in names)


def goodfire_file(path: Path) -> Path | None:
    """The one ``.pt``/``.pth`` state dict of a Goodfire-style folder (nothing else that
    holds weights, no sub-folders), else None."""
    if not path.is_dir():
        return None
    entries = list(path.iterdir())
    if any(e.is_dir() and not e.name.startswith(".") for e in entries):
        return None
    weights = [e for e in entries if e.suffix in (".pt", ".pth") and e.name != "ae.pt"
               and e.name not in _STATE_FILES and not e.name.startswith(_STATE_PREFIXES)]
    others = [e for e in entries if e.suffix in (".safetensors", ".npz")]
    return weights[0] if len(weights) == 1 and not others else None


def raw_files(path: Path) -> tuple[Path, Path] | None:
    """``(weights, config)`` of a raw safetensors checkpoint: a ``.safetensors`` file with a
    same-stem ``.json``, or a directory holding exactly one of each."""
    if path.is_file() and path.suffix == ".safetensors":
        cfg = path.with_suffix(".json")
        return (path, cfg) if cfg.is_file() else None
    if path.is_dir():
        weights, cfgs = sorted(path.glob("*.safetensors")), sorted(path.glob("*.json"))
        if len(weights) == 1 and len(cfgs) == 1:
            return weights[0], cfgs[0]
    return None


@dataclass(frozen=True)
class Format:
    """One on-disk checkpoint layout."""

    name: str
    needs: str
    matches: Callable[[Path], bool]


FORMATS: tuple[Format, ...] = (
    Format("SAELens", "cfg.json + sae_weights.safetensors",
           _has("cfg.json", "sae_weights.safetensors")),
    Format("sparsify", "cfg.json + sae.safetensors, one folder per hookpoint (layers.2/)",
           _has("cfg.json", "sae.safetensors")),
    Format("dictionary_learning", "ae.pt + config.json with a 'trainer' table (trainer_N/)",
           _has("ae.pt", "config.json")),
    Format("Gemma Scope", "params.npz (layer_N/width_16k/average_l0_L/)", _has("params.npz")),
    Format("Gemma Scope 2", "params.safetensors (+ config.json), e.g. "
           "resid_post/layer_12_width_16k_l0_medium/", _has("params.safetensors")),
    Format("Llama Scope", "hyperparams.json + checkpoints/final.safetensors",
           _has("hyperparams.json", "checkpoints/final.safetensors")),
    Format("Goodfire", "one .pt/.pth state dict (encoder_linear.*, decoder_linear.*)",
           lambda p: goodfire_file(p) is not None),
    Format("raw safetensors", "X.safetensors + X.json with d_in, d_sae, hook_name",
           lambda p: raw_files(p) is not None),
)


def format_of(path: Path) -> Format | None:
    """The first format whose files ``path`` (a directory) holds."""
    return next((f for f in FORMATS if f.matches(path)), None)


def looks_like_checkpoint(path: Path) -> bool:
    """True if ``path`` holds a file only checkpoints hold (a broken one, if no format fits)."""
    return any((path / m).is_file() for m in MARKERS)


def no_format_message(path: Path) -> str:
    """One line: the formats and their files, and what ``path`` holds."""
    found = sorted(e.name + ("/" if e.is_dir() else "") for e in path.iterdir()
                   if not e.name.startswith("."))[:8] if path.is_dir() else [path.name]
    listed = "; ".join(f"{f.name}: {f.needs}" for f in FORMATS)
    return (f"matches no checkpoint format (found: {', '.join(found) or 'nothing'}); "
            f"expected one of {listed}")
