"""Text datasets -> fixed-length token windows (SAELens ActivationsStore semantics)."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch

from pytest_saebench import reference
from pytest_saebench.errors import SaebenchError

_LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
            ".arrow": "arrow", ".csv": "csv"}


def _text_column(ds: datasets.Dataset, spec: str) -> str:
    if "text" in ds.column_names:
        return "text"
    for name, feature in ds.features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return name
    raise SaebenchError(
        f"dataset {spec}: no text column (columns: {', '.join(ds.column_names)}); "
        "provide a 'text' column"
    )


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: datasets wraps the parser's useful message in a generic one."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def load_text_dataset(spec: str, split: str = "train") -> datasets.Dataset:
    """A dataset with a ``text`` column from a local path (text/jsonl/parquet/arrow, a
    ``save_to_disk`` directory, or a directory of such files) or an HF dataset name (which
    must be in the local cache when offline)."""
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report failures once
    if spec.startswith(reference.DATASET_PREFIX):
        return reference.corpus_dataset(spec.removeprefix(reference.DATASET_PREFIX))
    path = Path(spec).expanduser()
    try:
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        if path.is_dir() and any((path / name).exists() for name in saved):
            loaded = datasets.load_from_disk(str(path))
            ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in _LOADERS)
            if not files:
                kinds = "/".join(_LOADERS)
                raise SaebenchError(f"dataset {spec}: directory holds no {kinds} files")
            ds = datasets.load_dataset(_LOADERS[files[0].suffix],
                                       data_files=[str(f) for f in files], split="train")
        elif path.is_file():
            if path.stat().st_size == 0:
                raise SaebenchError(f"dataset {spec}: the file is empty")
            if path.suffix not in _LOADERS:
                raise SaebenchError(
                    f"dataset {spec}: unknown file type '{path.suffix}'; use one of "
                    f"{', '.join(_LOADERS)}"
                )
            ds = datasets.load_dataset(_LOADERS[path.suffix], data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(spec, split=split)
    except SaebenchError:
        raise
    except Exception as exc:  # datasets raises many types for a bad name or file
        cause = _root_cause(exc)
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        if path.exists():
            raise SaebenchError(
                f"dataset {spec}: cannot be read ({type(cause).__name__}: {first}); check that "
                f"it is {'/'.join(_LOADERS)} text with a 'text' field") from None
        raise SaebenchError(
            f"dataset '{spec}' could not be loaded ({type(cause).__name__}: {first}); pass a "
            "local path or an HF dataset present in the local cache via --saebench-dataset"
        ) from None
    if len(ds) == 0:
        raise SaebenchError(f"dataset {spec}: has no rows; give a dataset with text in it")
    column = _text_column(ds, spec)
    dtype = getattr(ds.features[column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise SaebenchError(f"dataset {spec}: column '{column}' holds {dtype or 'non-text'} "
                            "values, not strings; store the text as strings")
    return ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds


def token_windows(
    tokenizer,
    ds: datasets.Dataset,
    n_windows: int,
    context_size: int,
    prepend_bos: bool,
    seed: int,
) -> torch.Tensor:
    """``[n_windows, context_size]`` token ids.

    Documents are shuffled with ``seed``, tokenized without special tokens and joined by a
    separator (BOS, else EOS); each window is BOS plus the next ``context_size - 1`` stream
    tokens when ``prepend_bos``, else the next ``context_size`` tokens.
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None and prepend_bos:
        raise SaebenchError("the tokenizer has neither a BOS nor an EOS token; cannot prepend BOS")
    body = context_size - 1 if prepend_bos else context_size
    need = n_windows * body
    stream: list[int] = []
    shuffled = ds.shuffle(seed=seed)
    for batch in shuffled.iter(batch_size=256):
        texts = [t for t in batch["text"] if t and t.strip()]
        if not texts:
            continue
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            if stream and bos is not None:
                stream.append(bos)
            stream.extend(ids)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise SaebenchError(
            f"dataset has only {len(stream)} tokens but the eval needs {need} "
            f"({n_windows} windows of {context_size}); use a larger dataset or a smaller suite"
        )
    body_ids = torch.tensor(stream[:need], dtype=torch.long).view(n_windows, body)
    if not prepend_bos:
        return body_ids
    return torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), body_ids], dim=1)


def dataset_key(spec: str) -> str:
    """``spec`` plus the size and modification time of its files when it is a local path, so
    an edited dataset never hits an old cache entry."""
    path = Path(spec.split(":", 1)[0] if ":" in spec and not Path(spec).exists() else spec)
    if spec.startswith("saebench-reference:"):
        from pytest_saebench import __version__

        return f"{spec}@{__version__}"
    if not path.exists():
        return spec
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    stamp = [(str(p.relative_to(path) if p != path else p.name), p.stat().st_size,
              p.stat().st_mtime_ns) for p in files]
    return f"{spec}@{stamp}"
