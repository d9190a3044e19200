"""The schema of a SAELens cfg.json, checked before sae_lens sees it (shared by discovery
and the format converters)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError, first_line

# sae_lens architectures whose output is not decode(encode(x)), and why.
UNSUPPORTED = {
    "matching_pursuit": "it has no encoder matrix; its codes come from iterated residual "
                        "matching against W_dec",
    "temporal": "its reconstruction adds a prediction from earlier positions of the "
                "context (sae(x) differs from decode(encode(x)))",
}


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# safetensors' names of the floating dtypes (its header says "I8", "U8", "BOOL", ... else)
FLOAT_STORAGE = frozenset({"F16", "BF16", "F32", "F64"})


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or one line saying why the file is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SaebenchError(f"{path}: not valid JSON ({exc}); re-save the checkpoint") from None
    except UnicodeDecodeError:
        raise SaebenchError(f"{path}: not UTF-8 text; re-save it as JSON") from None
    except OSError as exc:
        raise SaebenchError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise SaebenchError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _count(cfg: dict[str, Any], key: str, where: str, low: int = 1) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SaebenchError(f"{where}: '{key}' must be an integer >= {low}, got {value!r}")
    return value


def validate_cfg(cfg_path: Path, cfg: dict[str, Any]) -> None:
    """A SAELens cfg.json's schema, checked before sae_lens sees it: one line naming the file
    and the key, never a traceback from inside the library and never a default filled in."""
    if "metadata" in cfg and not isinstance(cfg["metadata"], dict | None):
        raise SaebenchError(f"{cfg_path}: 'metadata' must be an object, got "
                            f"{type(cfg['metadata']).__name__}")
    meta = {**cfg, **(cfg.get("metadata") or {})}  # SAELens v6 metadata over legacy keys
    missing = [k for k in ("d_in", "d_sae") if cfg.get(k) is None]
    hook = meta.get("hook_name") or meta.get("hook_point")
    if not hook:
        missing.append("metadata.hook_name")
    if missing:
        raise SaebenchError(
            f"{cfg_path}: missing key(s) {', '.join(missing)}; a SAELens cfg.json needs d_in, "
            "d_sae and metadata.hook_name (e.g. 'blocks.3.hook_resid_post')"
        )
    if not isinstance(hook, str):
        raise SaebenchError(f"{cfg_path}: 'hook_name' must be a string, got {hook!r}")
    _count(cfg, "d_in", str(cfg_path))
    d_sae = _count(cfg, "d_sae", str(cfg_path))
    arch = cfg.get("architecture", "standard")
    if not isinstance(arch, str):
        raise SaebenchError(f"{cfg_path}: 'architecture' must be a string, got {arch!r}")
    k = _count(cfg, "k", str(cfg_path))
    if arch in ("topk", "batchtopk") or k is not None:
        if k is None:
            # sae_lens would fill in its default (k = 100) and the run would pass silently
            raise SaebenchError(f"{cfg_path}: architecture '{arch}' needs 'k' (the number of "
                                "active latents it was trained with)")
        if d_sae is not None and k > d_sae:
            raise SaebenchError(f"{cfg_path}: 'k' = {k} is larger than d_sae = {d_sae}")
    dtype = cfg.get("dtype")
    if dtype is not None and str(dtype).removeprefix("torch.") not in FLOAT_DTYPES:
        raise SaebenchError(f"{cfg_path}: 'dtype' {dtype!r} is not a floating dtype torch "
                            f"evaluates an SAE in; use one of {', '.join(FLOAT_DTYPES)}")
    if arch in UNSUPPORTED:
        raise SaebenchError(f"{cfg_path}: architecture '{arch}' is not supported: "
                            f"{UNSUPPORTED[arch]}, and every eval splices decode(encode(x)) in")
    _check_reading(cfg_path, meta)
    _count(meta, "context_size", f"{cfg_path} (metadata)")
    layer = _count(meta, "hook_layer", f"{cfg_path} (metadata)", low=0)
    named = re.match(r"^blocks\.(\d+)\.", hook)
    if layer is not None and named and layer < int(named.group(1)):
        raise SaebenchError(f"{cfg_path}: metadata.hook_layer = {layer} but hook_name "
                            f"'{hook}' is in layer {named.group(1)}, which the model would "
                            f"never reach; set hook_layer to {named.group(1)} or remove it (it "
                            "is read from the hook name)")


def _check_reading(cfg_path: Path, meta: dict[str, Any]) -> None:
    """The keys that say how the trainer loaded its model and read its data."""
    cls = meta.get("model_class_name")
    if cls not in (None, "HookedTransformer"):
        raise SaebenchError(
            f"{cfg_path}: metadata.model_class_name '{cls}' is not supported; pytest-saebench "
            "evaluates SAEs on TransformerLens HookedTransformer models (hooks such as "
            "blocks.N.hook_resid_post), not AutoModelForCausalLM or HookedMamba modules")
    kwargs = meta.get("model_from_pretrained_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise SaebenchError(f"{cfg_path}: 'model_from_pretrained_kwargs' must be an object, "
                            f"got {kwargs!r}")
    sep = meta.get("sequence_separator_token", "bos")
    if not (sep in (None, "bos", "eos", "sep") or (isinstance(sep, int)
                                                   and not isinstance(sep, bool) and sep >= 0)):
        raise SaebenchError(f"{cfg_path}: 'sequence_separator_token' must be bos, eos, sep, a "
                            f"token id or null, got {sep!r}")
    concat = meta.get("disable_concat_sequences", False)
    if not isinstance(concat, bool):
        raise SaebenchError(f"{cfg_path}: 'disable_concat_sequences' must be true or false, "
                            f"got {concat!r}")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a ``.safetensors`` or ``.npz`` file, read from its header (the
    data stays on disk); a file that cannot be read is one line naming it."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as data:
                return {k: tuple(data[k].shape) for k in data.files}
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            dtypes = {k: fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors, numpy and zipfile each raise their own types
        kind = "npz" if path.suffix == ".npz" else "safetensors"
        raise SaebenchError(f"{path}: corrupt or truncated {kind} file ({first_line(exc)}); "
                            "re-save the checkpoint") from None
    bad = sorted(k for k, d in dtypes.items()  # a scalar (a step count) is no weight
                 if str(d).upper() not in FLOAT_STORAGE and len(shapes[k]) >= 1)
    if bad:
        # quantised or integer weights would be evaluated as numbers they do not stand for
        raise SaebenchError(f"{path}: tensor '{bad[0]}' is stored as {dtypes[bad[0]]}, not a "
                            "floating dtype; save the SAE's weights in float32, float16 or "
                            "bfloat16")
    return shapes


def check_tensor_shapes(weights: Path, shapes: dict[str, tuple[int, ...]], required: list[str],
                        d_in: int, d_sae: int, cfg_name: str, keys: str,
                        d_out: int | None = None) -> None:
    """Every format's weights against its config, naming the user's files (never a converted
    copy): required tensors present, none of size zero, encoder/decoder/biases of the shape
    ``cfg_name`` (whose ``keys`` give the sizes) says."""
    for name in required:
        if name not in shapes:
            raise SaebenchError(f"{weights}: tensor '{name}' is missing (found "
                                f"{', '.join(sorted(shapes)) or 'none'}); re-save the checkpoint")
    empty = sorted(n for n, shape in shapes.items() if 0 in shape)
    if empty:
        raise SaebenchError(f"{weights}: tensor '{empty[0]}' has size zero "
                            f"{list(shapes[empty[0]])}; re-save the checkpoint")
    d_out = d_in if d_out is None else d_out  # a transcoder writes d_out-wide activations
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_enc": (d_sae,),
                "b_dec": (d_out,), "W_skip": (d_out, d_in), "threshold": (d_sae,)}
    for name, shape in expected.items():
        if name in shapes and tuple(shapes[name]) != shape:
            raise SaebenchError(
                f"{weights}: tensor '{name}' has shape {list(shapes[name])} but {cfg_name} says "
                f"d_in={d_in}, d_sae={d_sae}, d_out={d_out} (expected {list(shape)}); fix {keys} "
                    "or the weights")
