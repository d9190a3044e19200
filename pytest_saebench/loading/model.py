"""Model names -> HookedTransformer, offline: a local model directory or the HF cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from pytest_saebench import reference
from pytest_saebench.activations import HookSpec, hook_activations
from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.loading import smollm2

TL_CONFIG_FILE = "tl_config.json"
WEIGHTS_FILE = "model.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Names that resolve to a model directory shipped with the package.
LOCAL_MODELS: dict[str, Path] = {reference.MODEL_NAME: reference.MODEL_DIR}


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``, with a clear error for anything else."""
    if name not in _DTYPES:
        raise SaebenchError(f"unknown dtype '{name}'{did_you_mean(name, _DTYPES)}")
    return _DTYPES[name]


def save_local_model(model: HookedTransformer, directory: str | Path) -> Path:
    """Write ``model`` as a local model directory (config, safetensors weights, tokenizer)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in model.cfg.to_dict().items() if _json_safe(v)}
    cfg["dtype"] = str(model.cfg.dtype).removeprefix("torch.")
    (directory / TL_CONFIG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))
    return directory


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _config_fields() -> set[str]:
    return set(HookedTransformerConfig.__dataclass_fields__)


def load_local_model(directory: Path, device: str, dtype: str) -> HookedTransformer:
    """Load a directory written by :func:`save_local_model`."""
    raw = json.loads((directory / TL_CONFIG_FILE).read_text())
    allowed = _config_fields()
    kwargs = {k: v for k, v in raw.items() if k in allowed and k not in ("device", "dtype")}
    kwargs.pop("n_params", None)  # derived; recomputed by __post_init__
    cfg = HookedTransformerConfig(**kwargs, device=device, dtype=torch_dtype(dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    model.load_state_dict(state, strict=False)
    model.to(torch_dtype(dtype), print_details=False)
    model.to(device, print_details=False)
    model.eval()
    return model


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


def check_hook(model: HookedTransformer, hook: HookSpec, d_in: int, checkpoint: str) -> None:
    """Fail clearly if the model has no such hook or its width is not the SAE's ``d_in``."""
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
            f"{checkpoint}/cfg.json: d_in={d_in} but hook '{hook.name}' of model "
            f"'{model.cfg.model_name}' has width {width}; the SAE was trained on another "
            "model or hook (check metadata.model_name / --saebench-model)"
        )
