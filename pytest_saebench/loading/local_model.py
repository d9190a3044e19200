"""A model directory of our own format (TransformerLens config, safetensors weights, tokenizer):
written once for converted models, read back offline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from pytest_saebench.errors import SaebenchError, did_you_mean

TL_CONFIG_FILE = "tl_config.json"
WEIGHTS_FILE = "model.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

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
