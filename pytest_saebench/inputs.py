"""What a checkpoint is evaluated on: its model, loaded as its trainer loaded it, and its
dataset's token windows, read as its trainer read them; each made once per run and shared
between checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_saebench.config import Settings
from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading.checkpoints import CheckpointRef
from pytest_saebench.paths import missing_path


class Inputs:
    """Models, datasets and token windows of one run."""

    def __init__(self, settings: Settings, device: Callable[[], str]):
        self.settings = settings
        self._device = device
        self._models: dict[tuple[str, str], Any] = {}
        self._records: dict[int, dict[str, Any]] = {}
        self._keys: dict[int, str] = {}
        self._datasets: dict[str, Any] = {}
        self._tokens: dict[tuple, Any] = {}

    def model_for(self, ref: CheckpointRef):
        """The HookedTransformer for ``ref``, shared between checkpoints of one model."""
        from pytest_saebench.loading.model import load_model

        name, kwargs = self._model_spec(ref)
        key = (name, repr(sorted(kwargs.items())))
        if key not in self._models:
            model = load_model(name, self._device(), self.settings.dtype, kwargs)
            from pytest_saebench.activations import transposed_layout

            transposed_layout(model)
            self._models[key] = model
            self._records[id(model)] = self.model_record(ref)
        return self._models[key]

    def _model_spec(self, ref: CheckpointRef) -> tuple[str, dict[str, Any]]:
        from pytest_saebench.loading.model import pretrained_kwargs, resolve_model_name

        name = resolve_model_name(self.settings.model, ref.model_name, ref.where())
        return name, pretrained_kwargs(ref.meta.get("model_from_pretrained_kwargs"),
                                       dict(self.settings.model_kwargs))

    def model_record(self, ref: CheckpointRef) -> dict[str, Any]:
        """How ``ref``'s model is loaded (loader, kwargs, processing flags)."""
        from pytest_saebench.loading.model import loading_record

        return loading_record(*self._model_spec(ref))

    def model_key(self, model) -> str:
        """The model's identity in cache keys: its weights' fingerprint and how it was loaded
        (the processing is in the key even where the weights already differ, so an entry
        never outlives a change of how the model loads)."""
        if id(model) not in self._keys:
            from pytest_saebench.cache import model_fingerprint

            loading = self._records.get(id(model), {})
            self._keys[id(model)] = (f"{model.cfg.model_name}:{model_fingerprint(model)}:"
                                     f"{sorted(loading.items())}")
        return self._keys[id(model)]

    def dataset_for(self, ref: CheckpointRef) -> str:
        """``--saebench-dataset`` unless ``auto``; else the checkpoint's ``dataset_path``;
        else the embedded corpus (training split), which needs no network."""
        from pytest_saebench.reference import DATASET_PREFIX

        if self.settings.dataset != "auto":
            return self.settings.dataset
        spec = ref.meta.get("dataset_path")
        return str(spec) if spec else f"{DATASET_PREFIX}train"

    def opened(self, spec: str) -> bool:
        """True once an eval has read ``spec``."""
        return spec in self._datasets

    def dataset_source(self, spec: str):
        """The opened dataset ``spec`` (once per run)."""
        if spec not in self._datasets:
            from pytest_saebench.loading.data import load_text_dataset

            self._datasets[spec] = load_text_dataset(spec)
        return self._datasets[spec]

    def token_source(self, model, ref: CheckpointRef, spec: str, seed: int):
        """``(tokens(n, context, prepend_bos), cache key of the windows)``, read the way the
        checkpoint's trainer read them (its separator and concatenation settings)."""
        from pytest_saebench.loading.data import dataset_key, token_windows

        separator = ref.meta.get("sequence_separator_token", "bos")
        concat = not ref.meta.get("disable_concat_sequences", False)

        def tokens(n_windows: int, context_size: int, prepend_bos: bool):
            # Fewer windows are a prefix of more (same order), so one read serves every eval.
            key = (id(model), spec, context_size, prepend_bos, seed, repr(separator), concat)
            held = self._tokens.get(key)
            if held is None or held.shape[0] < n_windows:  # opened by the first eval reading
                self._tokens[key] = held = token_windows(
                    model.tokenizer, self.dataset_source(spec), n_windows, context_size,
                    prepend_bos, seed, separator, concat, model.cfg.d_vocab)
            return held[:n_windows]

        return tokens, f"{dataset_key(spec)}|sep={separator}|concat={concat}"

    def preflight(self, refs: list[CheckpointRef], reads_dataset: bool) -> None:
        """Before anything is collected: one line (a usage error) naming the checkpoint, for a
        model that cannot be loaded offline, or a dataset the evals read that is missing or
        (a Hub dataset) not cached, instead of an error on every item later."""
        checked: set[str] = set()
        for ref in refs:
            if ref.error is not None:
                continue
            try:
                self._preflight_one(ref, reads_dataset, checked)
            except SaebenchError as exc:
                where = ref.where()
                raise SaebenchError(str(exc) if where in str(exc) else f"{where}: {exc}"
                                    ) from None

    def _preflight_one(self, ref: CheckpointRef, reads_dataset: bool, checked: set[str]
                       ) -> None:
        from pytest_saebench.loading import hub
        from pytest_saebench.loading.model import local_model_path

        name, _ = self._model_spec(ref)
        if name not in checked and local_model_path(name) is None:
            hub.check_model_cached(name)
        checked.add(name)
        spec = self.dataset_for(ref)
        if reads_dataset and self.settings.dataset == "auto" and missing_path(spec):
            raise SaebenchError(f"dataset_path {spec}: no such file or directory; pass "
                                "--saebench-dataset PATH_OR_NAME, or set dataset in "
                                "[tool.pytest-saebench]")
        if (reads_dataset and spec not in checked and hub.offline()
                and hub.is_hub_name(spec) and hub.cached_dataset_snapshot(spec) is None):
            raise SaebenchError(hub.dataset_not_cached(spec))
        checked.add(spec)
