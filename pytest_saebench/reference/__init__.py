"""The embedded default: a small trained LM (``saebench-reference``), its tokenizer and the
text corpus it was trained on, all shipped in the package and usable with no network."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
MODEL_DIR = HERE / "model"
CORPUS_DIR = HERE / "corpus"
MODEL_NAME = "saebench-reference"
HOOK_NAME = "blocks.2.hook_resid_post"
DATASET_PREFIX = "saebench-reference:"
SPLITS = ("train", "heldout")
# Only meaningful in a source checkout: where train.py writes the example checkpoints.
CHECKPOINTS_DIR = HERE.parents[1] / "example_tests" / "checkpoints"


def corpus_dataset(split: str = "heldout"):
    """The embedded corpus split as a ``datasets.Dataset`` with ``text`` and ``source``."""
    import datasets

    if split not in SPLITS:
        from pytest_saebench.errors import SaebenchError

        raise SaebenchError(f"unknown split '{DATASET_PREFIX}{split}'; use one of "
                            + ", ".join(DATASET_PREFIX + s for s in SPLITS))
    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(CORPUS_DIR / f"{split}.jsonl.gz"),
                                 split="train")
