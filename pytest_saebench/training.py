"""Train an SAE in CI with no network: the embedded reference model and its training corpus,
in the form SAELens's ``LanguageModelSAETrainingRunner`` takes them.

    from pytest_saebench.training import DATASET, HOOK_NAME, MODEL_NAME, reference_inputs

    model, dataset = reference_inputs()
    cfg = LanguageModelSAERunnerConfig(model_name=MODEL_NAME, dataset_path=DATASET,
                                       hook_name=HOOK_NAME, context_size=128, ...)
    LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()

The names go into the checkpoint's cfg.json, and the plugin resolves both offline, so the
checkpoints gate with ``model = "auto"`` and ``dataset = "auto"``.
"""

from __future__ import annotations

from typing import Any

from pytest_saebench import reference

MODEL_NAME = reference.MODEL_NAME
DATASET = f"{reference.DATASET_PREFIX}train"
HOOK_NAME = reference.HOOK_NAME
D_MODEL = 128
CONTEXT_SIZE = 128


def reference_inputs(device: str = "cpu") -> tuple[Any, Any]:
    """``(model, dataset)``: the reference ``HookedTransformer`` (4 layers, d_model 128) and its
    training corpus as a ``datasets.Dataset`` with a ``text`` column, for SAELens's runner
    (``override_model``, ``override_dataset``)."""
    from pytest_saebench.loading.model import load_model

    return load_model(MODEL_NAME, device, "float32"), reference.corpus_dataset("train")


def hub_dataset(name: str, split: str = "train") -> Any:
    """Hub dataset ``name`` streamed as ``datasets.load_dataset(name, streaming=True)`` gives
    it, for SAELens's runner (``override_dataset``): from the local Hugging Face cache when it
    holds the dataset (with ``HF_HUB_OFFLINE=1``, where ``load_dataset`` by name refuses),
    else from the Hub. Offline and not cached: one line with the command that fetches it."""
    from pytest_saebench.loading.data import open_hub_dataset

    return open_hub_dataset(name, split)[0]
