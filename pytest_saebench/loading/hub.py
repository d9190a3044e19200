"""``sae_lens:RELEASE/SAE_ID`` and ``hf:REPO[/PATH]``: SAEs in the local Hugging Face cache.

``sae_lens:`` goes through ``SAE.from_pretrained``, whose release is either a name in
sae_lens's pretrained directory or a Hub repository id (``owner/name``, holding a ``/``), as
sae_lens itself reads it. ``hf:`` finds the repository's cached snapshot and discovers the
checkpoint(s) in it by content, like a local folder. Offline, nothing is downloaded: a
missing SAE fails in one line with the command that fetches it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from pytest_saebench.errors import SaebenchError, did_you_mean, first_line

SAE_LENS_PREFIX = "sae_lens:"
HF_PREFIX = "hf:"
EXAMPLE = "sae_lens:pythia-70m-deduped-res-sm/blocks.3.hook_resid_post"


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")



def is_hub_name(spec: str) -> bool:
    """True for ``owner/name`` that is neither a local path nor an embedded dataset."""
    return (spec.count("/") == 1 and all(spec.split("/")) and ":" not in spec
            and not Path(spec).expanduser().exists())


def cached_dataset_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's snapshot of dataset repository ``name``, or None."""
    if name.count("/") != 1 or not all(name.split("/")):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached, or not a valid repository id
        return None


def dataset_not_cached(name: str) -> str:
    """One line: the dataset is not cached, and the command that fetches (part of) it."""
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (f"dataset '{name}' is not in the local Hugging Face cache ({home}) and "
            "HF_HUB_OFFLINE=1; fetch once what an evaluation reads (one data file is enough) "
            f"with: HF_HUB_OFFLINE=0 hf download {name} --repo-type dataset --include "
            "'FIRST_DATA_FILE', or pass a local path or saebench-reference:train (embedded, "
            "always offline) with --saebench-dataset")


def split_release(body: str, releases: set[str]) -> tuple[str, str]:
    """``(release, sae_id)``: the longest leading ``/``-joined part that is a known release;
    else a repository id ``owner/name`` and the rest, as ``SAE.from_pretrained`` reads it."""
    parts = body.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        release = "/".join(parts[:cut])
        if release in releases:
            return release, "/".join(parts[cut:])
    if len(parts) >= 3 and all(parts[:3]):
        return "/".join(parts[:2]), "/".join(parts[2:])
    hint = did_you_mean(parts[0], releases)
    raise SaebenchError(f"--sae-path {SAE_LENS_PREFIX}{body}: '{parts[0]}' is neither a "
                        f"release sae_lens knows{hint} nor a Hub repository id (owner/name); "
                        f"expected sae_lens:RELEASE/SAE_ID, e.g. {EXAMPLE}")


def fetch_command(release: str, sae_id: str) -> str:
    """The one command that puts the SAE into the local cache."""
    return (f"HF_HUB_OFFLINE=0 python -c \"from sae_lens import SAE; "
            f"SAE.from_pretrained('{release}', '{sae_id}')\"")


def convert_sae_lens_release(spec: str, out_root: Path) -> tuple[str, Path]:
    """``(id, SAELens directory)`` for ``sae_lens:RELEASE/SAE_ID``."""
    body = spec[len(SAE_LENS_PREFIX):]
    check_parts(spec, body, "sae_lens:RELEASE/SAE_ID")
    if body.count("/") < 1 or not all(body.split("/")):
        raise SaebenchError(f"--sae-path {spec}: expected sae_lens:RELEASE/SAE_ID, e.g. "
                            f"{EXAMPLE}")
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from pytest_saebench.quiet_sae_lens import SAE

    release, sae_id = split_release(body, set(get_pretrained_saes_directory()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as exc:  # unknown release/id, or not in the offline cache
        first = first_line(exc)
        hint = (" With HF_HUB_OFFLINE=1 it must already be in the local Hugging Face cache; "
                f"fetch it once with: {fetch_command(release, sae_id)}" if offline() else "")
        raise SaebenchError(f"--sae-path {spec}: sae_lens cannot load release '{release}', "
                            f"SAE '{sae_id}' ({type(exc).__name__}: {first}).{hint}") from None
    out = out_root / hashlib.sha256(spec.encode()).hexdigest()[:20]
    sae.save_model(out)
    return f"{release}/{sae_id}", out


def check_parts(spec: str, body: str, form: str) -> None:
    """Refuse a Hub spec that would leave the cache: an absolute path or a '.'/'..' part."""
    if body.startswith(("/", "\\")) or (len(body) > 1 and body[1] == ":"):
        raise SaebenchError(f"--sae-path {spec}: an absolute path is not a Hub id; expected "
                            f"{form} (a local folder goes without the prefix)")
    if any(part in (".", "..") for part in body.replace("\\", "/").split("/")):
        raise SaebenchError(f"--sae-path {spec}: a '..' or '.' part would leave the Hub "
                            f"cache; expected {form}")


def cached_repo_path(spec: str) -> tuple[str, Path]:
    """``(id, local path)`` for ``hf:OWNER/NAME[/PATH]`` from the local Hugging Face cache."""
    check_parts(spec, spec[len(HF_PREFIX):], "hf:OWNER/NAME[/PATH]")
    parts = spec[len(HF_PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise SaebenchError(f"--sae-path {spec}: expected hf:OWNER/NAME[/PATH], e.g. "
                            "hf:google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise SaebenchError(f"--sae-path {spec}: '{repo}' is not a valid Hugging Face "
                            "repository id (OWNER/NAME of letters, digits, '-', '_' and '.'); "
                            "check the spelling") from None

    try:
        root = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        include = f" --include '{sub}/*'" if sub else ""
        raise SaebenchError(f"--sae-path {spec}: repository {repo} is not in the local Hugging "
                            f"Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}); "
                            f"fetch it once with: HF_HUB_OFFLINE=0 hf download {repo}{include}"
                            ) from None
    path = root / sub if sub else root
    if not path.exists():
        raise SaebenchError(f"--sae-path {spec}: the cached snapshot of {repo} has no '{sub}'; "
                            f"fetch it with: HF_HUB_OFFLINE=0 hf download {repo} "
                            f"--include '{sub}/*'")
    return "/".join(parts), path


def model_fetch_command(name: str) -> str:
    """The one command that puts a TransformerLens model into the local cache."""
    return (f"HF_HUB_OFFLINE=0 python -c \"from transformer_lens import HookedTransformer; "
            f"HookedTransformer.from_pretrained_no_processing('{name}')\"")


def check_model_cached(name: str) -> None:
    """One line, before TransformerLens tries, for a name it does not know or (offline) a
    model whose files are not in the local Hugging Face cache."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        hint = did_you_mean(name, _tl_names())
        raise SaebenchError(f"model '{name}' is neither a local model directory nor a model "
                            f"TransformerLens knows{hint}; pass --saebench-model NAME_OR_PATH "
                            "(e.g. gpt2, EleutherAI/pythia-70m-deduped)") from None
    if not offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(official, "config.json"), str):
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise SaebenchError(f"model '{name}' ({official}) is not in the local Hugging Face "
                            f"cache ({home}) and HF_HUB_OFFLINE=1; fetch it once with: "
                            f"{model_fetch_command(name)}")


def _tl_names() -> list[str]:
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    return list(OFFICIAL_MODEL_NAMES)
