"""Model names -> HookedTransformer, offline: a local model directory or the HF cache."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from pytest_saebench import reference
from pytest_saebench.activations import HookSpec, hook_activations
from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.loading import smollm2
from pytest_saebench.loading.local_model import (  # re-exported; shared with smollm2
    TL_CONFIG_FILE,
    WEIGHTS_FILE,
    load_local_model,
    save_local_model,
    torch_dtype,
)

__all__ = ["TL_CONFIG_FILE", "WEIGHTS_FILE", "load_local_model", "save_local_model",
           "torch_dtype", "load_model", "resolve_model_name"]

# Names that resolve to a model directory shipped with the package.
LOCAL_MODELS: dict[str, Path] = {reference.MODEL_NAME: reference.MODEL_DIR}


def resolve_model_name(option: str, checkpoint_model: str | None, checkpoint: str) -> str:
    """The model to use: ``--saebench-model`` unless ``auto``, else the checkpoint's."""
    if option and option != "auto":
        return option
    if not checkpoint_model:
        raise SaebenchError(
            f"{checkpoint}/cfg.json: no metadata.model_name; pass --saebench-model NAME_OR_PATH "
            "or set model = '...' in [tool.pytest-saebench]"
        )
    return checkpoint_model


def load_model(
    name: str, device: str, dtype: str, from_pretrained_kwargs: dict[str, Any] | None = None
) -> HookedTransformer:
    """Load ``name``: a local model directory, a registered name (``saebench-reference``,
    ``smollm2-135m``), or a TransformerLens name.

    TransformerLens names load from the local HF cache; with ``HF_HUB_OFFLINE=1`` a model
    that is not cached fails with a message saying so.
    """
    path = Path(name).expanduser()
    if name in LOCAL_MODELS:
        path = LOCAL_MODELS[name]
    elif name == smollm2.MODEL_NAME:
        path = smollm2.local_dir()
    if (path / TL_CONFIG_FILE).is_file():
        return load_local_model(path, device, dtype)
    if path.exists():
        raise SaebenchError(
            f"model path {path}: no {TL_CONFIG_FILE}; expected a directory written by "
            "pytest_saebench.loading.model.save_local_model"
        )
    kwargs = dict(from_pretrained_kwargs or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HookedTransformer.from_pretrained(
                name, device=device, dtype=torch_dtype(dtype), **kwargs
            )
    except Exception as exc:  # any loader failure is the user's model name or cache
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
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
            f"{checkpoint}/cfg.json: hook '{hook.name}' does not exist in model "
            f"'{model.cfg.model_name}'{hint}"
        )
    probe = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    width = hook_activations(model, probe, hook).shape[-1]
    if width != d_in:
        raise SaebenchError(
            f"{checkpoint}/cfg.json: {key}={d_in} but hook '{hook.name}' of model "
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
