"""Load a checkpoint into a decoder-norm-folded sae_lens SAE, with clear errors."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from pytest_saebench.activations import HookSpec
from pytest_saebench.errors import SaebenchError, SaebenchWarning, first_line
from pytest_saebench.loading.checkpoints import FIRST_INT, WEIGHTS_FILE, CheckpointRef
from pytest_saebench.loading.schema import check_tensor_shapes, tensor_shapes
from pytest_saebench.quiet_sae_lens import SAE, SAE_CLASS_REGISTRY


@dataclass
class LoadedSAE:
    """An SAE ready for evaluation, in the model's raw activation space."""

    ref: CheckpointRef
    sae: SAE
    hook: HookSpec
    folded: bool
    decoder_norm_max_deviation: float
    # Transcoders read ``hook`` and write ``hook_out`` (None: an SAE, which writes ``hook``).
    hook_out: HookSpec | None = None

    @property
    def is_transcoder(self) -> bool:
        """True when the output hook is not the input hook."""
        return self.hook_out is not None

    @property
    def target(self) -> HookSpec:
        """The hook whose activation the SAE reconstructs and replaces."""
        return self.hook_out or self.hook

    @property
    def d_out(self) -> int:
        """Output width (``d_in`` for an SAE)."""
        return int(getattr(self.sae.cfg, "d_out", None) or self.sae.cfg.d_in)

    def reconstruct(self, x):
        """The SAE's (transcoder's) output for input activations ``x``."""
        out = self.sae.decode(self.sae.encode(x))
        return out + self.skip(x) if self.has_skip else out

    @property
    def has_skip(self) -> bool:
        """A skip transcoder: ``reconstruct`` adds ``x @ W_skip.T``."""
        return getattr(self.sae, "W_skip", None) is not None

    def skip(self, x):
        """The skip connection's term for input ``x``."""
        return x @ self.sae.W_skip.T.to(x.dtype)

    def record(self) -> dict[str, Any]:
        """What the results say about the SAE as evaluated: its format, where it came from
        and every fold applied at load."""
        meta = self.ref.meta
        return {"format": self.ref.format, "path": self.ref.shown_path,
                "architecture": self.architecture, "decoder_norm_folded": self.folded,
                "activation_scaling_folded": meta.get("saebench_folded")}

    @property
    def d_in(self) -> int:
        """Input width."""
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        """sae_lens architecture name."""
        return str(self.sae.cfg.architecture())


def _check_weights_file(ref: CheckpointRef) -> None:
    path = ref.path / WEIGHTS_FILE
    d_in, d_sae = int(ref.cfg["d_in"]), int(ref.cfg["d_sae"])
    d_out = ref.cfg.get("d_out")
    shapes = tensor_shapes(path)
    check_tensor_shapes(path, shapes, ["W_enc", "W_dec", "b_dec"], d_in, d_sae, "cfg.json",
                        "cfg.json", d_out=int(d_out) if isinstance(d_out, int) else None)


def _check_finite(ref: CheckpointRef, sae: SAE) -> None:
    for name, tensor in sae.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise SaebenchError(
                f"{ref.where(WEIGHTS_FILE)}: tensor '{name}' has {bad} NaN/inf value(s); "
                "the checkpoint diverged or was saved mid-step, re-export a finite one"
            )


_WARNED: set[tuple[str, ...]] = set()


def _warn_ignored_keys(ref: CheckpointRef, sae: SAE) -> None:
    """A cfg.json from another sae_lens version may hold keys this one does not know; sae_lens
    drops them silently, so say once which (legacy, pre-6 configs are converted instead)."""
    version = (ref.cfg.get("metadata") or {}).get("sae_lens_version")
    if not version:
        return
    known = {f.name for f in dataclasses.fields(type(sae.cfg))} | {"metadata", "architecture"}
    ignored = tuple(sorted(set(ref.cfg) - known))
    if ignored and ignored not in _WARNED:
        _WARNED.add(ignored)
        from importlib.metadata import version as installed

        warnings.warn(SaebenchWarning(
            f"{ref.where()}: key(s) {', '.join(ignored)} (written by sae_lens {version}) are "
            f"not ones sae_lens {installed('sae-lens')} knows and were ignored"), stacklevel=2)


def load_sae(ref: CheckpointRef, device: str, dtype: str = "float32") -> LoadedSAE:
    """Load ``ref`` with sae_lens, validate it and fold decoder norms into the encoder.

    TopK SAEs without ``rescale_acts_by_decoder_norm`` are kept unfolded, because folding
    would change which latents win the top-k; the result records ``folded=False``.
    """
    _check_weights_file(ref)
    norm = ref.cfg.get("normalize_activations", "none")
    if norm not in ("none", "layer_norm", None):
        raise SaebenchError(
            f"{ref.where()}: normalize_activations='{norm}' cannot be evaluated in "
            "the model's raw activation space; save the SAE with it folded into the weights "
            "(SAELens's trainer does for expected_average_only_in and covariance_whitening)"
        )
    arch = ref.cfg.get("architecture", "standard")
    if arch not in SAE_CLASS_REGISTRY:
        raise SaebenchError(
            f"{ref.where()}: architecture '{arch}' is not one sae_lens loads "
            f"({', '.join(SAE_CLASS_REGISTRY)}); sae_lens saves a BatchTopK SAE for inference "
            "as 'jumprelu' (or 'topk')"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sae = SAE.load_from_disk(str(ref.path), device=device, dtype=dtype)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise SaebenchError(
            f"{ref.where()}: sae_lens cannot build this SAE ({first_line(exc)}); check "
            "'architecture' and its keys (standard, topk, batchtopk, jumprelu, gated)"
        ) from None
    _check_finite(ref, sae)
    _warn_ignored_keys(ref, sae)
    sae.eval()
    if hasattr(sae, "turn_off_forward_pass_hook_z_reshaping"):
        # We flatten hook_z ourselves so every hook looks like [..., d_in].
        sae.turn_off_forward_pass_hook_z_reshaping()
    with torch.no_grad():
        norms = sae.W_dec.norm(dim=-1)
        deviation = float((norms - 1).abs().max()) if norms.numel() else 0.0
    try:
        sae.fold_W_dec_norm()
        folded = True
    except NotImplementedError:
        folded = False
    return LoadedSAE(
        ref=ref,
        sae=sae,
        hook=HookSpec(ref.hook_name, ref.hook_layer),
        folded=folded,
        decoder_norm_max_deviation=deviation,
        hook_out=_hook_out(ref),
    )


def _hook_out(ref: CheckpointRef) -> HookSpec | None:
    """The transcoder's output hook (``metadata.hook_name_out``), None for an SAE."""
    name = ref.meta.get("hook_name_out")
    if not name or name == ref.hook_name:
        return None
    if not isinstance(name, str):
        raise SaebenchError(f"{ref.where()}: 'hook_name_out' must be a string, "
                            f"got {name!r}")
    found = FIRST_INT.search(name)
    return HookSpec(name, int(found.group(1)) if found else ref.hook_layer)
