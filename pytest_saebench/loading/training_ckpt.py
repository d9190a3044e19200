"""SAELens checkpoints saved during training, made into the SAE SAELens would save at the end.

A checkpoint that ``SAETrainer`` writes mid-training holds the training SAE's weights as
trained, on *scaled* activations (``normalize_activations="expected_average_only_in"``: the
input times ``activation_scaler.json``'s ``scaling_factor``; ``"covariance_whitening"``: also
whitened with ``activation_whitening.safetensors``), and possibly a training-only
architecture (``batchtopk``, ``matryoshka_batchtopk``). Before its final save the trainer
folds the scaling (and the whitening) into the weights and ``save_inference_model`` writes
the inference SAE; this module does exactly that, with sae_lens's own methods, into a
converted copy, and records what it folded in the copy's ``metadata.saebench_folded``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError, first_line

SCALER_FILE = "activation_scaler.json"
WHITENING_FILE = "activation_whitening.safetensors"
NEEDS_SCALER = ("expected_average_only_in", "covariance_whitening")
# sae_lens architectures that exist only as training classes (saved for inference as others).
TRAINING_ONLY = ("batchtopk", "matryoshka_batchtopk")


def is_training_checkpoint(cfg: dict[str, Any]) -> bool:
    """True when ``cfg`` (a SAELens cfg.json) needs the trainer's final fold to evaluate."""
    return (cfg.get("normalize_activations") in NEEDS_SCALER
            or cfg.get("architecture") in TRAINING_ONLY)


def read_scaler(path: Path, norm: str | None) -> tuple[float | None, bool]:
    """``(scaling_factor, has_whitening)`` from ``path/activation_scaler.json``, checked
    against what ``normalize_activations = norm`` needs."""
    scaler = path / SCALER_FILE
    cfg_file = path / "cfg.json"
    if norm not in NEEDS_SCALER:
        return None, False
    if not scaler.is_file():
        raise SaebenchError(
            f"{cfg_file}: normalize_activations='{norm}' but there is no {SCALER_FILE} beside "
            "it, so the scale the weights were trained at is unknown; SAELens writes that file "
            "with every mid-training checkpoint (a final checkpoint is saved folded, "
            "normalize_activations='none')")
    from pytest_saebench.loading.schema import read_json_object

    data = read_json_object(scaler)
    factor = data.get("scaling_factor")
    whitening = data.get("has_whitening", False)
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int | float)
                               or not math.isfinite(factor) or factor <= 0):
        raise SaebenchError(f"{scaler}: 'scaling_factor' must be a positive number or null, "
                            f"got {factor!r}")
    if not isinstance(whitening, bool):
        raise SaebenchError(f"{scaler}: 'has_whitening' must be true or false, got "
                            f"{whitening!r}")
    if norm == "expected_average_only_in" and factor is None:
        raise SaebenchError(f"{scaler}: 'scaling_factor' is null but {cfg_file.name} says "
                            f"normalize_activations='{norm}'; the checkpoint was saved before "
                            "the trainer estimated it, evaluate a later one")
    if norm == "covariance_whitening" and not (whitening and (path / WHITENING_FILE).is_file()):
        raise SaebenchError(f"{cfg_file}: normalize_activations='{norm}' needs {WHITENING_FILE} "
                            f"and has_whitening=true in {SCALER_FILE}; copy the whole "
                            "checkpoint folder")
    return factor, whitening


def convert_training_checkpoint(path: Path, out: Path) -> Path:
    """Fold ``path``'s activation scaling (and whitening) into its training SAE as SAELens's
    trainer does at the end of ``fit()``, and write the inference SAE to ``out``."""
    from pytest_saebench.loading.schema import read_json_object

    cfg = read_json_object(path / "cfg.json")
    norm = cfg.get("normalize_activations")
    factor, whitening = read_scaler(path, norm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sae_lens.saes.sae import TrainingSAE
        from sae_lens.training.activation_scaler import ActivationScaler

        try:
            sae = TrainingSAE.load_from_disk(str(path), device="cpu")
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            first = first_line(exc)
            raise SaebenchError(f"{path / 'cfg.json'}: sae_lens cannot build this training "
                                f"checkpoint ({type(exc).__name__}: {first}); check "
                                "'architecture' and its keys") from None
        scaler = ActivationScaler()
        if norm in NEEDS_SCALER:
            scaler.load(path / SCALER_FILE)
        if scaler.scaling_factor is not None:
            sae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
        if scaler.whitening is not None:
            sae.fold_activation_whitening(mean=scaler.whitening.mean,
                                          whitening_matrix=scaler.whitening.matrix,
                                          unwhitening_matrix=scaler.whitening.inverse_matrix)
        sae.cfg.normalize_activations = "none"
        sae.save_inference_model(str(out))
    saved = json.loads((out / "cfg.json").read_text())
    meta = saved.setdefault("metadata", {})
    meta.update({"source_format": "SAELens training checkpoint", "source_path": str(path),
                 "saebench_folded": {
                     "from": SCALER_FILE if norm in NEEDS_SCALER else None,
                     "normalize_activations": norm, "scaling_factor": factor,
                     "whitening": whitening,
                     "training_architecture": cfg.get("architecture"),
                     "inference_architecture": saved.get("architecture")}})
    from pytest_saebench.atomic import write_bytes_atomic

    # sorted: sae_lens builds its cfg dict in no fixed order, and the hash of the copy is
    # what tells the same artifact from another training run (baseline.py)
    write_bytes_atomic(out / "cfg.json", json.dumps(saved, indent=1, sort_keys=True).encode())
    return out
