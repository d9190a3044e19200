"""Published checkpoint layouts -> a SAELens directory, through sae_lens's own loaders.

- Gemma Scope (``params.npz``, SAEs and transcoders), Gemma Scope 2 (``params.safetensors``),
  Llama Scope (``hyperparams.json`` + ``checkpoints/final.safetensors``) and Goodfire (one
  ``.pt``): sae_lens's pretrained loaders (``gemma_2``, ``gemma_2_transcoder``, ``gemma_3``,
  ``llama_scope``, ``goodfire``) do the conversion. They are written against the Hub, so they
  run here with ``hf_hub_download`` (and Gemma Scope 2's header read) answered from the local
  folder; nothing is downloaded. The repository name fixes model and hook for Gemma Scope, so
  it comes from the folder (``gemma-scope-2b-pt-res/...``, or the HF cache's
  ``models--google--...``). Widths come from the tensors: the file is the truth.
- sparsify (``cfg.json`` + ``sae.safetensors``): converted here. sae_lens 6.54's
  ``sparsify_disk_loader`` transposes ``W_dec`` (sparsify stores ``[num_latents, d_in]``, as
  SAELens does), does not subtract ``b_dec`` before encoding (sparsify always does, except for
  transcoders), maps ``layers.N.mlp`` to the residual stream and names the parent folder as
  the model. Each of these is checked against sparsify's own forward in the tests.

Every converted SAE is built by sae_lens (``SAE.load_from_disk`` with a converter) and saved
with ``save_model``, so what is evaluated is what sae_lens would load.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from pytest_saebench.errors import SaebenchError, first_line
from pytest_saebench.loading.detect import goodfire_file
from pytest_saebench.loading.schema import check_tensor_shapes, read_json_object, tensor_shapes

_REPO_IN_CACHE = re.compile(r"^models--([^-][^/]*?)--(.+)$")
_SPARSIFY_HOOK = re.compile(r"^(?:.*\.)?layers[._](\d+)(?:\.(mlp|self_attn|attn|attention))?$")
_SPARSIFY_SUB = {None: "hook_resid_post", "mlp": "hook_mlp_out", "self_attn": "hook_attn_out",
                 "attn": "hook_attn_out", "attention": "hook_attn_out"}


def repo_root(path: Path, prefix: str) -> tuple[str, Path] | None:
    """``(repo_id, root)`` from the nearest ancestor named like the repository (an HF
    cache snapshot ``models--OWNER--NAME/snapshots/REV``, or a folder ``PREFIX...``)."""
    for anc in (path, *path.parents):
        m = _REPO_IN_CACHE.match(anc.name)
        if m and (path.is_relative_to(anc / "snapshots")):
            rev = path.relative_to(anc / "snapshots").parts[:1]
            return f"{m.group(1)}/{m.group(2)}", anc / "snapshots" / rev[0]
        if anc.name.startswith(prefix):
            return f"google/{anc.name}", anc
    return None


@contextlib.contextmanager
def _local_hub(root: Path) -> Iterator[None]:
    """sae_lens's Hub loaders, answered from ``root`` (the repository's local copy)."""
    from huggingface_hub.utils import EntryNotFoundError
    from sae_lens.loading import pretrained_sae_loaders as psl

    def download(repo_id: str, filename: str, *, subfolder: str | None = None,
                 **_: Any) -> str:
        found = root / (subfolder or "") / filename
        if not found.is_file():
            raise EntryNotFoundError(f"{found} does not exist")
        return str(found)

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        return {k: list(v) for k, v in tensor_shapes(Path(download(repo_id, filename))).items()}

    with mock.patch.object(psl, "hf_hub_download", download), \
            mock.patch.object(psl, "get_safetensors_tensor_shapes", shapes):
        yield


def _build(cfg: dict[str, Any], state: dict[str, Any], weights: Path, cfg_name: str):
    """A sae_lens SAE from a loader's ``(cfg, state_dict)``, shapes checked first."""
    import warnings

    from pytest_saebench.quiet_sae_lens import SAE

    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if "d_out" in cfg:  # a transcoder decodes into another hook's space
        shapes.pop("W_dec", None)
        shapes.pop("b_dec", None)
    check_tensor_shapes(weights, shapes, ["W_enc", "b_enc"], d_in, d_sae, cfg_name, cfg_name)
    state = {k: v.float().contiguous() for k, v in state.items()}
    cfg = {**cfg, "dtype": "float32", "device": "cpu"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SAE.load_from_disk(weights.parent, device="cpu",
                                      converter=lambda *_a, **_k: (dict(cfg), dict(state)))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise SaebenchError(f"{weights}: sae_lens cannot build this SAE ({first_line(exc)})"
                            ) from None


def save_converted(sae: Any, out: Path, source_format: str, source: Path,
                   **extra: Any) -> Path:
    """Save ``sae`` as a SAELens directory at ``out``, recording where it came from."""
    from pytest_saebench.atomic import write_bytes_atomic

    sae.save_model(out)
    cfg = json.loads((out / "cfg.json").read_text())
    meta = cfg.setdefault("metadata", {})
    meta.update({"source_format": source_format, "source_path": str(source), **extra})
    write_bytes_atomic(out / "cfg.json", json.dumps(cfg, indent=1, sort_keys=True).encode())
    return out


def convert_gemma_scope(path: Path, out: Path) -> Path:
    """``params.npz`` (Gemma Scope) or ``params.safetensors`` (Gemma Scope 2)."""
    from sae_lens.loading import pretrained_sae_loaders as psl

    npz = (path / "params.npz").is_file()
    weights = path / ("params.npz" if npz else "params.safetensors")
    found = repo_root(path, "gemma-scope")
    if found is None:
        raise SaebenchError(
            f"{weights}: Gemma Scope's repository name fixes its model and hook, and no folder "
            "above this one is named like it; keep the download's layout (e.g. "
            "gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/) or use "
            "hf:google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
    repo_id, root = found
    folder = path.relative_to(root).as_posix()
    try:
        shapes = tensor_shapes(weights)
        w_enc = shapes.get("W_enc") or shapes.get("w_enc")
        if not w_enc or len(w_enc) != 2:
            raise SaebenchError(f"{weights}: no 2-d encoder tensor 'W_enc' (found "
                                f"{', '.join(sorted(shapes)) or 'none'})")
        sizes = {"d_in": w_enc[0], "d_sae": w_enc[1], "dtype": "float32", "device": "cpu"}
        transcoder = npz and "transcoder" in repo_id
        if transcoder:
            sizes["d_out"] = (shapes.get("W_dec") or shapes.get("w_dec") or [0, 0])[-1]
        # every tensor against the encoder's widths now, before sae_lens builds the SAE (its
        # state-dict error names neither the tensor nor the shapes)
        named = {("W_" + k[2:] if k.startswith("w_") else k): tuple(v) for k, v in shapes.items()}
        check_tensor_shapes(weights, named, ["W_enc", "W_dec"], w_enc[0], w_enc[1],
                            "its W_enc", "the file (fetch it again)", d_out=sizes.get("d_out"))
        loader = (psl.gemma_2_transcoder_huggingface_loader if transcoder
                  else psl.gemma_2_sae_huggingface_loader if npz
                  else psl.gemma_3_sae_huggingface_loader)
        with _local_hub(root):
            cfg, state, _ = loader(repo_id, folder, device="cpu", cfg_overrides=sizes)
    except SaebenchError:
        raise
    except Exception as exc:  # the loader's own complaint about names or tensors
        raise SaebenchError(f"{weights}: sae_lens's Gemma Scope loader refuses it "
                            f"({type(exc).__name__}: {first_line(exc)}); repository "
                            f"{repo_id}, folder {folder}") from None
    sae = _build(cfg, state, weights, f"{repo_id}/{folder}")
    return save_converted(sae, out, "gemma_scope" if npz else "gemma_scope_2", path,
                          repo_id=repo_id)


def convert_llama_scope(path: Path, out: Path) -> Path:
    """``hyperparams.json`` + ``checkpoints/final.safetensors``; the dataset-wise input
    normalisation is folded into the weights, as ``SAE.from_pretrained`` does."""
    from sae_lens.loading import pretrained_sae_loaders as psl

    hyper_path = path / "hyperparams.json"
    hyper = read_json_object(hyper_path)
    norms = hyper.get("dataset_average_activation_norm")
    for key in ("d_model", "d_sae", "jump_relu_threshold", "hook_point_in"):
        if key not in hyper:
            raise SaebenchError(f"{hyper_path}: missing '{key}' (Llama Scope's hyperparams.json "
                                "names d_model, d_sae, hook_point_in, jump_relu_threshold)")
    if not isinstance(norms, dict) or not isinstance(norms.get("in"), int | float):
        raise SaebenchError(f"{hyper_path}: 'dataset_average_activation_norm' must hold a "
                            "number 'in' (the input norm it was normalised by)")
    try:
        with _local_hub(path.parent):
            cfg, state, _ = psl.llama_scope_sae_huggingface_loader(
                "local", path.name, device="cpu", cfg_overrides={"dtype": "float32"})
    except Exception as exc:  # the loader's own complaint about the tensors
        raise SaebenchError(f"{path / 'checkpoints/final.safetensors'}: sae_lens's Llama Scope "
                            f"loader refuses it ({type(exc).__name__}: {first_line(exc)})"
                            ) from None
    cfg["normalize_activations"] = "none"
    sae = _build(cfg, state, path / "checkpoints" / "final.safetensors", hyper_path.name)
    sae.fold_activation_norm_scaling_factor(int(cfg["d_in"]) ** 0.5 / float(norms["in"]))
    return save_converted(sae, out, "llama_scope", path)


def convert_goodfire(path: Path, out: Path) -> Path:
    """One Goodfire ``.pt``/``.pth`` (read with ``weights_only=True``); sae_lens knows the
    published files by name, a same-stem ``.json`` (d_in, d_sae, hook_name, model_name)
    describes any other."""
    import torch
    from sae_lens.loading import pretrained_sae_loaders as psl

    weights = path if path.is_file() else goodfire_file(path)
    assert weights is not None
    sidecar = weights.with_suffix(".json")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # pickled objects, truncated zip
        raise SaebenchError(f"{weights}: not a plain tensor state dict ({first_line(exc)}); "
                            "it is loaded with weights_only=True") from None
    need = ("encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight",
            "decoder_linear.bias")
    if not isinstance(state, dict) or any(k not in state for k in need):
        got = ", ".join(sorted(map(str, state))) if isinstance(state, dict) else \
            type(state).__name__
        raise SaebenchError(f"{weights}: a Goodfire SAE holds {', '.join(need)} (found {got})")
    if sidecar.is_file():
        side = read_json_object(sidecar)
        missing = [k for k in ("hook_name",) if k not in side]
        if missing:
            raise SaebenchError(f"{sidecar}: missing key(s) {', '.join(missing)}")
        cfg = {"architecture": "standard", "apply_b_dec_to_input": False,
               "d_in": int(state["encoder_linear.weight"].shape[1]),
               "d_sae": int(state["encoder_linear.weight"].shape[0]), **side}
    else:
        try:
            cfg = psl.get_goodfire_config_from_hf(
                f"Goodfire/{weights.stem}", weights.name, "cpu",
                cfg_overrides={"d_in": int(state["encoder_linear.weight"].shape[1]),
                               "d_sae": int(state["encoder_linear.weight"].shape[0])})
        except ValueError:
            raise SaebenchError(
                f"{weights}: not a Goodfire SAE sae_lens knows by name; write {sidecar.name} "
                "beside it with hook_name (e.g. 'blocks.19.hook_resid_post') and model_name"
            ) from None
    tensors = {"W_enc": state["encoder_linear.weight"].T, "b_enc": state["encoder_linear.bias"],
               "W_dec": state["decoder_linear.weight"].T, "b_dec": state["decoder_linear.bias"]}
    sae = _build(cfg, tensors, weights, sidecar.name if sidecar.is_file() else weights.name)
    return save_converted(sae, out, "goodfire", weights)


def _sparsify_hook(folder: str, where: Path) -> tuple[str, int]:
    if folder == "embed_tokens":
        return "hook_embed", 0
    m = _SPARSIFY_HOOK.match(folder)
    if not m:
        raise SaebenchError(f"{where}: cannot map sparsify hookpoint '{folder}' to a "
                            "TransformerLens hook (known: layers.N, layers.N.mlp, "
                            "layers.N.self_attn, embed_tokens)")
    return f"blocks.{m.group(1)}.{_SPARSIFY_SUB[m.group(2)]}", int(m.group(1))


def convert_sparsify(path: Path, out: Path) -> Path:
    """A sparsify hookpoint folder (``cfg.json`` + ``sae.safetensors``; the run's
    ``config.json`` one level up gives model, dataset and context length)."""
    from safetensors.torch import load_file

    cfg_path, weights = path / "cfg.json", path / "sae.safetensors"
    raw = read_json_object(cfg_path)
    run = read_json_object(path.parent / "config.json") if (
        path.parent / "config.json").is_file() else {}
    if raw.get("activation", "topk") != "topk":
        raise SaebenchError(f"{cfg_path}: activation '{raw.get('activation')}' has no sae_lens "
                            "architecture; only sparsify's topk SAEs can be evaluated")
    for key in ("d_in", "k"):
        if not isinstance(raw.get(key), int) or isinstance(raw.get(key), bool):
            raise SaebenchError(f"{cfg_path}: '{key}' must be an integer (sparsify's cfg.json "
                                "has d_in, k and num_latents or expansion_factor)")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors' own error type for a bad header
        raise SaebenchError(f"{weights}: corrupt or truncated safetensors file "
                            f"({first_line(exc)}); re-save the checkpoint") from None
    if "encoder.weight" not in state or "W_dec" not in state:
        raise SaebenchError(f"{weights}: a sparsify SAE holds encoder.weight, encoder.bias, "
                            f"W_dec, b_dec (found {', '.join(sorted(state)) or 'none'})")
    d_in, d_sae = raw["d_in"], int(state["encoder.weight"].shape[0])
    hook, layer = _sparsify_hook(path.name, cfg_path)
    transcode = bool(raw.get("transcode", False))
    meta: dict[str, Any] = {"model_name": run.get("model"), "hook_name": hook,
                            "hook_layer": layer, "prepend_bos": True}
    if run.get("ctx_len"):
        meta["context_size"] = int(run["ctx_len"])
    if run.get("dataset") and Path(str(run["dataset"])).suffix != ".bin":
        meta["dataset_path"] = run["dataset"]
    tensors = {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
               "W_dec": state["W_dec"], "b_dec": state["b_dec"]}
    cfg: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "k": int(raw["k"]),
                           "apply_b_dec_to_input": True, **meta}
    if transcode:
        raise SaebenchError(f"{cfg_path}: a sparsify transcoder (transcode = true) applies "
                            "top-k, which none of sae_lens's transcoder classes does; it "
                            "cannot be evaluated as what it is")
    cfg["architecture"] = "topk"
    sae = _build(cfg, tensors, weights, cfg_path.name)
    return save_converted(sae, out, "sparsify", path)
