"""dictionary_learning and raw safetensors checkpoints, converted to a SAELens directory.

- dictionary_learning: ``ae.pt`` (a state dict, read with ``torch.load(weights_only=True)``,
  so nothing but tensors is ever unpickled) plus ``config.json`` with a ``trainer`` table;
  classes AutoEncoder, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE (its
  ``group_sizes`` become the nested prefix widths) and JumpReluAutoEncoder. Converted here,
  not by sae_lens's ``dictionary_learning_1`` loader: that one maps every SAE to
  ``blocks.{layer}.hook_resid_post`` whatever its ``submodule_name`` (mlp_out, attn_out),
  and drops the Matryoshka group sizes.
- raw: one ``.safetensors`` file holding ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec`` (and
  ``threshold`` for JumpReLU) next to one JSON config with ``d_in``, ``d_sae``, ``hook_name``
  and optionally ``model_name``, ``architecture`` and ``k``.

The converted copy lives in a per-process temporary directory; the checkpoint keeps the id of
its original directory, and errors name the original file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError, first_line
from pytest_saebench.loading.schema import check_tensor_shapes, read_json_object, validate_cfg

DL_WEIGHTS, DL_CONFIG = "ae.pt", "config.json"
_ROOT: list[Path] = []
# dictionary_learning class -> (sae_lens architecture, {sae_lens name: (key, transpose)},
# subtracts b_dec before encoding)
_LINEAR = {"W_enc": ("encoder.weight", True), "b_enc": ("encoder.bias", False),
           "W_dec": ("decoder.weight", True), "b_dec": ("b_dec", False)}
DL_CLASSES: dict[str, tuple[str, dict[str, tuple[str, bool]], bool]] = {
    "AutoEncoder": ("standard", {**_LINEAR, "b_dec": ("bias", False)}, True),
    "AutoEncoderTopK": ("topk", _LINEAR, True),
    "BatchTopKSAE": ("jumprelu", {**_LINEAR, "threshold": ("threshold", False)}, True),
    "MatryoshkaBatchTopKSAE": ("jumprelu", {"W_enc": ("W_enc", False), "b_enc": ("b_enc", False),
                                            "W_dec": ("W_dec", False), "b_dec": ("b_dec", False),
                                            "threshold": ("threshold", False)}, True),
    "JumpReluAutoEncoder": ("jumprelu", {"W_enc": ("W_enc", False), "b_enc": ("b_enc", False),
                                         "W_dec": ("W_dec", False), "b_dec": ("b_dec", False),
                                         "threshold": ("threshold", False)}, False),
}
_SUBMODULE = re.compile(r"^(resid_post|resid_pre|mlp_out|attn_out)_layer_(\d+)$")


def is_dictionary_learning(path: Path) -> bool:
    """A directory with ``ae.pt`` and ``config.json``."""
    return (path / DL_WEIGHTS).is_file() and (path / DL_CONFIG).is_file()


def out_dir(*sources: Path) -> Path:
    """A fresh directory for a converted copy, named by the sources' paths and content
    (a directory source by its files' names and sizes)."""
    root = converted_root()
    digest = hashlib.sha256()
    for src in sources:
        digest.update(str(src.resolve()).encode())
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    digest.update(f"{f.relative_to(src)}:{f.stat().st_size}:"
                                  f"{f.stat().st_mtime_ns}".encode())
        else:
            digest.update(src.read_bytes())
    return root / digest.hexdigest()[:20]


def _hook_of(trainer: dict[str, Any], where: Path) -> str:
    name = str(trainer.get("submodule_name") or "")
    m = _SUBMODULE.match(name)
    if m:
        return f"blocks.{m.group(2)}.hook_{m.group(1)}"
    if name.startswith("blocks."):
        return name
    if trainer.get("layer") is not None and not name:
        return f"blocks.{int(trainer['layer'])}.hook_resid_post"
    raise SaebenchError(f"{where}: cannot map submodule_name '{name}' to a TransformerLens hook; "
                        "use e.g. 'resid_post_layer_3' or a hook name like "
                        "'blocks.3.hook_resid_post'")


def _positive_int(value: Any, cfg_path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaebenchError(f"{cfg_path}: '{key}' must be an integer >= 1, got {value!r}")
    return value


def _check_shapes(weights: Path, cfg_path: Path, tensors: dict[str, Any], d_in: int,
                  d_sae: int, keys: str, required: list[str]) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    check_tensor_shapes(weights, shapes, required, d_in, d_sae, cfg_path.name, keys)


def _write(out: Path, tensors: dict[str, Any], cfg: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    from pytest_saebench.atomic import write_bytes_atomic

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "sae_weights.safetensors"))
    write_bytes_atomic(out / "cfg.json", json.dumps(cfg, indent=1, sort_keys=True).encode())
    return out


def convert_dictionary_learning(path: Path) -> Path:
    """Convert ``path`` (ae.pt + config.json) into a SAELens directory; returns it."""
    import torch

    weights, cfg_path = path / DL_WEIGHTS, path / DL_CONFIG
    raw = read_json_object(cfg_path)
    trainer = raw.get("trainer", raw)
    if not isinstance(trainer, dict):
        raise SaebenchError(f"{cfg_path}: 'trainer' must be an object, got "
                            f"{type(trainer).__name__}")
    cls = trainer.get("dict_class")
    if cls not in DL_CLASSES:
        raise SaebenchError(f"{cfg_path}: trainer.dict_class '{cls}' is not supported "
                            f"(supported: {', '.join(DL_CLASSES)})")
    for key in ("activation_dim", "dict_size"):
        if key not in trainer:
            raise SaebenchError(f"{cfg_path}: missing trainer.{key}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch each raise their own (text: KeyError)
        raise SaebenchError(f"{weights}: not a plain tensor state dict ({type(exc).__name__}: "
                            f"{first_line(exc, 160)});"
                            " it is loaded with weights_only=True and never unpickles "
                            "objects") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()
                                              ) or not all(isinstance(k, str) for k in state):
        raise SaebenchError(f"{weights}: expected a state dict of tensors named by strings, got "
                            f"{type(state).__name__}; save it with torch.save(ae.state_dict())")
    arch, mapping, subtract = DL_CLASSES[cls]
    tensors = {}
    for ours, (theirs, transpose) in mapping.items():
        if theirs not in state:
            raise SaebenchError(f"{weights}: missing tensor '{theirs}' that {cls} needs "
                                f"(found: {', '.join(sorted(state))})")
        t = state[theirs].float()
        tensors[ours] = t.T if transpose else t
    d_in = _positive_int(trainer["activation_dim"], cfg_path, "trainer.activation_dim")
    d_sae = _positive_int(trainer["dict_size"], cfg_path, "trainer.dict_size")
    if "threshold" in tensors and tensors["threshold"].numel() == 1:  # BatchTopK: one scalar
        tensors["threshold"] = tensors["threshold"].reshape(()).expand(d_sae).clone()
    _check_shapes(weights, cfg_path, tensors, d_in, d_sae, "trainer.activation_dim/dict_size",
                  list(tensors))
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": arch, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": subtract, "normalize_activations": "none",
           "metadata": {"model_name": trainer.get("lm_name"),
                        "hook_name": _hook_of(trainer, cfg_path),
                        "context_size": (raw.get("buffer") or {}).get("ctx_len", 128),
                        "prepend_bos": True, "source_format": "dictionary_learning",
                        "source_path": str(path)}}
    if "group_sizes" in state:
        sizes = [int(g) for g in state["group_sizes"].reshape(-1).tolist()]
        if not sizes or min(sizes) < 1 or sum(sizes) != d_sae:
            raise SaebenchError(f"{weights}: group_sizes {sizes} must be positive and sum to "
                                f"trainer.dict_size = {d_sae}")
        cfg["metadata"]["matryoshka_widths"] = [sum(sizes[:i + 1]) for i in range(len(sizes))]
    if arch == "topk":
        k = trainer.get("k", state.get("k"))
        if k is None:
            raise SaebenchError(f"{cfg_path}: missing trainer.k for {cls}")
        cfg["k"] = int(k.item()) if isinstance(k, torch.Tensor) and k.numel() == 1 else k
    validate_cfg(cfg_path, cfg)
    return _write(out_dir(weights, cfg_path), tensors, cfg)


def convert_raw(weights: Path, cfg_path: Path) -> Path:
    """Convert a raw safetensors file plus JSON config into a SAELens directory."""
    from safetensors.torch import load_file

    raw = read_json_object(cfg_path)
    missing = [k for k in ("d_in", "d_sae", "hook_name") if k not in raw]
    if missing:
        raise SaebenchError(f"{cfg_path}: missing key(s) {', '.join(missing)} (a raw checkpoint "
                            "config needs d_in, d_sae and hook_name)")
    arch = raw.get("architecture", "standard")
    d_in = _positive_int(raw["d_in"], cfg_path, "d_in")
    d_sae = _positive_int(raw["d_sae"], cfg_path, "d_sae")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a corrupt header
        raise SaebenchError(f"{weights}: corrupt or truncated safetensors file "
                            f"({first_line(exc, 160)}); "
                            "re-save the checkpoint") from None
    need = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
    _check_shapes(weights, cfg_path, tensors, d_in, d_sae, "d_in/d_sae", need)
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": arch,
           "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", True)),
           "normalize_activations": "none",
           "metadata": {"model_name": raw.get("model_name"), "hook_name": raw["hook_name"],
                        "context_size": raw.get("context_size", 128),
                        "prepend_bos": raw.get("prepend_bos", True),
                        "dataset_path": raw.get("dataset_path"), "source_format": "raw",
                        "source_path": str(weights)}}
    if "k" in raw or arch == "topk":
        cfg["k"] = raw.get("k")
    validate_cfg(cfg_path, cfg)
    return _write(out_dir(weights, cfg_path), {k: tensors[k].float() for k in need}, cfg)


def converted_root() -> Path:
    """The per-process directory that holds converted copies (removed at exit)."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="saebench-converted-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]
