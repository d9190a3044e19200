"""Model names -> HookedTransformer, offline: a local model directory or the HF cache."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from pytest_saebench import reference
from pytest_saebench.activations import HookSpec, hook_activations
from pytest_saebench.errors import SaebenchError, did_you_mean, first_line
from pytest_saebench.loading import smollm2
from pytest_saebench.loading.local_model import (  # re-exported; shared with smollm2
    TL_CONFIG_FILE,
    WEIGHTS_FILE,
    load_local_model,
    save_local_model,
    torch_dtype,
)

__all__ = ["TL_CONFIG_FILE", "WEIGHTS_FILE", "load_local_model", "save_local_model",
           "torch_dtype", "load_model", "resolve_model_name", "loading_record",
           "pretrained_kwargs"]

# Names that resolve to a model directory shipped with the package.
LOCAL_MODELS: dict[str, Path] = {reference.MODEL_NAME: reference.MODEL_DIR}


def resolve_model_name(option: str, checkpoint_model: str | None, checkpoint: str) -> str:
    """The model to use: ``--saebench-model`` unless ``auto``, else the checkpoint's."""
    if option and option != "auto":
        return option
    if not checkpoint_model:
        raise SaebenchError(
            f"{checkpoint}: the checkpoint names no model (SAELens: metadata.model_name; "
            "sparsify: 'model' in the run's config.json; dictionary_learning: trainer.lm_name); "
            "pass --saebench-model NAME_OR_PATH or set model = '...' in [tool.pytest-saebench]"
        )
    return checkpoint_model


# TransformerLens's weight processing; SAELens and SAEBench load with all of it off
# (``from_pretrained_no_processing``) and record any exception in the checkpoint's
# ``model_from_pretrained_kwargs``.
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed",
                    "fold_value_biases", "refactor_factored_attn_matrices")
# Ours to set (--saebench-device/--saebench-dtype), never a checkpoint's.
_OWN_KWARGS = ("device", "dtype", "torch_dtype", "move_to_device")


def local_model_path(name: str) -> Path | None:
    """The model directory ``name`` stands for (registered name or path), or None."""
    if name in LOCAL_MODELS:
        return LOCAL_MODELS[name]
    if name == smollm2.MODEL_NAME:
        return smollm2.local_dir()
    path = Path(name).expanduser()
    return path if path.exists() else None


def pretrained_kwargs(checkpoint_kwargs: dict[str, Any] | None,
                      user_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's ``model_from_pretrained_kwargs`` with the user's on top, less the
    device and dtype (set by the run)."""
    merged = {**(checkpoint_kwargs or {}), **(user_kwargs or {})}
    return {k: v for k, v in merged.items() if k not in _OWN_KWARGS}


def loading_record(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """How ``name`` is loaded, for the results: loader, kwargs and every processing flag."""
    if name in LOCAL_MODELS or name == smollm2.MODEL_NAME or Path(name).expanduser().exists():
        return {"name": name, "loader": "local model directory (weights as saved)",
                "kwargs": {}, **dict.fromkeys(PROCESSING_FLAGS, False)}
    flags = {f: bool(kwargs.get(f, False)) for f in PROCESSING_FLAGS}
    return {"name": name, "loader": "HookedTransformer.from_pretrained_no_processing",
            "kwargs": dict(sorted(kwargs.items())), **flags}


def load_model(
    name: str, device: str, dtype: str, from_pretrained_kwargs: dict[str, Any] | None = None
) -> HookedTransformer:
    """Load ``name``: a local model directory, a registered name (``saebench-reference``,
    ``smollm2-135m``), or a TransformerLens name.

    TransformerLens names load as SAELens and SAEBench load them:
    ``from_pretrained_no_processing`` (no LayerNorm folding, no centring) plus
    ``from_pretrained_kwargs``, so the activations are the ones the SAE was trained on. They
    come from the local HF cache; offline, a model that is not cached fails in one line with
    the command that fetches it.
    """
    path = local_model_path(name)
    if path is not None and (path / TL_CONFIG_FILE).is_file():
        return load_local_model(path, device, dtype)
    if path is not None:
        raise SaebenchError(
            f"model path {path}: no {TL_CONFIG_FILE}; expected a directory written by "
            "pytest_saebench.loading.model.save_local_model"
        )
    from pytest_saebench.loading.hub import check_model_cached

    check_model_cached(name)
    kwargs = dict(from_pretrained_kwargs or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HookedTransformer.from_pretrained_no_processing(
                name, device=device, dtype=torch_dtype(dtype), **kwargs
            )
    except Exception as exc:  # any loader failure is the user's model name or cache
        first = first_line(exc)
        raise SaebenchError(
            f"model '{name}' could not be loaded ({type(exc).__name__}: {first}); it is not a "
            "local model directory, so it must be a TransformerLens model in the local HF "
            "cache (offline runs cannot download) -- pass --saebench-model NAME_OR_PATH"
        ) from None
    model.eval()
    return model


def check_hook(model: HookedTransformer, hook: HookSpec, d_in: int, checkpoint: str,
               key: str = "d_in") -> None:
    """Fail clearly if the model has no such hook or its width is not the SAE's ``d_in``
    (``key`` = ``d_out`` for a transcoder's output hook)."""
    if hook.name not in model.hook_dict:
        hint = did_you_mean(hook.name, model.hook_dict)
        raise SaebenchError(
            f"{checkpoint}: hook '{hook.name}' does not exist in model "
            f"'{model.cfg.model_name}'{hint}"
        )
    probe = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    width = hook_activations(model, probe, hook).shape[-1]
    if width != d_in:
        raise SaebenchError(
            f"{checkpoint}: {key}={d_in} but hook '{hook.name}' of model "
            f"'{model.cfg.model_name}' has width {width}; the SAE was trained on another "
            "model or hook (check metadata.model_name / --saebench-model)"
        )


def available_device(device: str) -> str:
    """``device`` when torch can use it; else the one-line reason (not a checkpoint error)."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise SaebenchError(f"device '{device}': torch {torch.__version__} sees no CUDA "
                                "GPU; use --saebench-device cpu (or auto)")
        if index >= torch.cuda.device_count():
            raise SaebenchError(f"device '{device}': only {torch.cuda.device_count()} CUDA "
                                "device(s) visible; use cuda:0 or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SaebenchError("device 'mps': not available in this torch build; use cpu or auto")
    return device
