"""What the trainers themselves say about the hub world's SAEs, on the plugin's tokens:
``python tests/hub_compare.py ROOT RESULTS_JSON`` prints one JSON object (run with the
world's ``HF_HOME`` and ``HF_HUB_OFFLINE=1``).

- SAELens: an ``ActivationsStore`` over the same stream, shuffled with the plugin's seed and
  buffer, yields the same windows and activations (``max_buffer_input_shards=1``: the
  plugin fills its buffer from one shard at a time, so memory does not grow with the number
  of data files); ``sae_lens.evals.run_evals`` on the
  plugin's windows evaluates each SAE as SAELens does (a mid-training checkpoint as the
  training SAE with its ``ActivationScaler``, the final one as saved).
- dictionary_learning: its own ``AutoEncoder`` on the raw HF model's block output (what its
  nnsight buffer reads), with explained variance, MSE and L0 computed here from scratch.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import hub_world as W  # noqa: E402

SEED = 42
BATCH, N_REC, N_VAR = 8, 8, 32  # core's fast preset
N = BATCH * (N_REC + N_VAR)


def _store(model: Any, sae: Any, stream: Any):
    from sae_lens.training.activations_store import ActivationsStore

    from pytest_saebench.loading.data import SHUFFLE_BUFFER

    # The plugin's shuffle of the stream (seeded buffer, one shard at a time); the store then
    # reads and windows it as it reads any dataset.
    shuffled = stream.shuffle(seed=SEED, buffer_size=SHUFFLE_BUFFER, max_buffer_input_shards=1)
    return ActivationsStore.from_sae(model, sae, context_size=W.CONTEXT, dataset=shuffled,
                                     streaming=True, store_batch_size_prompts=BATCH,
                                     train_batch_size_tokens=512, n_batches_in_buffer=4)


def saelens_side(root: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Windows, activations and SAELens's own core metrics for each SAELens checkpoint."""
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.load_model import load_model as saelens_load_model
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.activation_scaler import ActivationScaler

    from pytest_saebench.activations import HookSpec, hook_activations
    from pytest_saebench.loading.data import load_text_dataset, token_windows
    from pytest_saebench.loading.model import load_model

    model = saelens_load_model("HookedTransformer", W.MODEL, "cpu",
                               {"center_writing_weights": False})
    ours_model = load_model(W.MODEL, "cpu", "float32", {"center_writing_weights": False})
    out: dict[str, Any] = {"metrics": {}, "tokens_equal": {}}
    mid = sorted((root / "saelens" / "checkpoints").glob("*/*"))[0]
    cases = {f"saelens/checkpoints/{mid.parent.name}/{mid.name}": (mid, True, W.TEXT),
             "saelens/final": (root / "saelens" / "final", False, W.TEXT),
             "saelens_tokens/final": (root / "saelens_tokens" / "final", False, W.TOKENS)}
    for sae_id, (path, training, dataset) in cases.items():
        sae = TrainingSAE.load_from_disk(path) if training else SAE.load_from_disk(path)
        scaler = ActivationScaler()
        if training:
            scaler.load(path / "activation_scaler.json")
        stream = W.tokens_stream() if dataset == W.TOKENS else W.text_stream()
        store = _store(model, sae, stream)
        theirs = store.get_batch_tokens(N)
        ours = token_windows(ours_model.tokenizer, load_text_dataset(dataset), N, W.CONTEXT,
                             True, SEED)
        out["tokens_equal"][sae_id] = bool(torch.equal(theirs.cpu(), ours))
        if sae_id == "saelens/final":
            acts = store.get_activations(ours[:BATCH]).reshape(BATCH, W.CONTEXT, -1)
            mine = hook_activations(ours_model, ours[:BATCH], HookSpec(W.HOOK, W.LAYER))
            out["acts_max_diff"] = float((acts - mine).abs().max())
        store.iterable_sequences = iter(list(ours))  # SAELens evaluates the same windows
        cfg = EvalConfig(batch_size_prompts=BATCH, n_eval_reconstruction_batches=N_REC,
                         n_eval_sparsity_variance_batches=N_VAR, compute_kl=True,
                         compute_ce_loss=True, compute_l2_norms=True,
                         compute_sparsity_metrics=True, compute_variance_metrics=True)
        out["metrics"][sae_id] = run_evals(sae, store, model, scaler, cfg,
                                           exclude_special_tokens=True)[0]
    out["ours"] = {k: v["evals"].get("core", {}).get("eval_result_metrics")
                   for k, v in results["saes"].items()}
    return out


def dictionary_learning_side(root: Path, context: int, dataset: str) -> dict[str, Any]:
    """dictionary_learning's AutoEncoder on raw HF activations of the plugin's windows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.modules.setdefault("nnsight", types.ModuleType("nnsight"))
    sys.modules["nnsight"].LanguageModel = object  # type: ignore[attr-defined]
    from dictionary_learning.dictionary import AutoEncoder

    from pytest_saebench.loading.data import load_text_dataset, token_windows

    ae = AutoEncoder.from_pretrained(str(root / "dictionary_learning" / "trainer_0" / "ae.pt"))
    model = AutoModelForCausalLM.from_pretrained(W.MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(W.MODEL)
    tokens = token_windows(tokenizer, load_text_dataset(dataset), N, context, True, SEED)
    tokens = tokens[BATCH * N_REC:]  # core's sparsity/variance phase
    seen: list[torch.Tensor] = []
    hook = model.gpt_neox.layers[W.LAYER].register_forward_hook(
        lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        for i in range(0, len(tokens), BATCH):
            model(tokens[i:i + BATCH])
    hook.remove()
    x = torch.cat(seen).reshape(-1, W.D_MODEL).double()
    special = [i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id,
                           tokenizer.pad_token_id) if i is not None]
    x = x[~torch.isin(tokens.reshape(-1), torch.tensor(special))]
    with torch.no_grad():
        codes = ae.encode(x.float()).double()
        recon = ae.decode(codes.float()).double()
    residual = ((x - recon) ** 2).sum(-1).mean()
    variance = ((x - x.mean(0)) ** 2).sum(-1).mean()
    return {"explained_variance": float(1 - residual / variance), "mse": float(residual),
            "l0": float((codes != 0).sum(-1).double().mean())}


def main(root: Path, results_path: Path) -> None:
    import datasets

    # SAELens's stores close parquet streams early, each waiting 5 s for Arrow's threads;
    # this process runs on for seconds after, so a short wait does (see loading/data.py).
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1
    results = json.loads(results_path.read_text())
    out = saelens_side(root, results)
    dl = results["saes"]["dictionary_learning/trainer_0"]
    out["dictionary_learning"] = dictionary_learning_side(
        root, int(dl["evals"]["core"]["sae_cfg_dict"]["metadata"]["context_size"]),
        dl["inputs"]["dataset"]["name"])
    print("\n" + json.dumps(out))  # last line: TransformerLens prints to stdout


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
