"""Datasets -> fixed-length token windows, read the way SAELens's ``ActivationsStore`` reads
them: text is tokenized and joined by ``concat_and_batch_sequences`` (BOS at each window's
start, a separator between documents), a pretokenized ``tokens``/``input_ids`` column is used
row by row, cut to the context size.

Everything but the small embedded corpus is read as a stream (``streaming=True``) and
shuffled in a seeded buffer, so memory and time follow the tokens an eval needs, never the
dataset's size. A Hub name is streamed from its snapshot in the local Hugging Face cache
(offline) or from the Hub.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from pytest_saebench import reference
from pytest_saebench.errors import SaebenchError, first_line
from pytest_saebench.loading import hub
from pytest_saebench.paths import missing_path

_LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
            ".arrow": "arrow", ".csv": "csv"}
_SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")
# Columns in SAELens's order of preference; the first two hold token ids.
TOKEN_COLUMNS = ("tokens", "input_ids")
SHUFFLE_BUFFER = 2048  # documents held by the streaming shuffle
# datasets >= 4 fills the buffer from up to 10 shards at once, holding a record batch of each:
# memory would grow with the number of data files up to 10 of them. One at a time keeps it
# at one batch (shard order is still shuffled).
_ONE_SHARD_AT_A_TIME = ({"max_buffer_input_shards": 1} if "max_buffer_input_shards" in
                        inspect.signature(datasets.IterableDataset.shuffle).parameters else {})
# Bump when the windowing changes, so cached activations of old windows are not reused.
WINDOWS_VERSION = 3


@dataclass
class DatasetSource:
    """A dataset opened for reading: where it came from and which column holds the data."""

    spec: str
    data: Any  # datasets.Dataset (embedded corpus) or datasets.IterableDataset
    column: str
    pretokenized: bool
    streamed: bool
    origin: str  # embedded corpus | local path | hub cache | hub
    location: str  # the path read, the cached snapshot, or the Hub name
    revision: str = ""  # a cached snapshot's commit

    def rows(self, seed: int) -> Iterator[Any]:
        """The column's values in an order fixed by ``seed``."""
        if isinstance(self.data, datasets.Dataset):
            shuffled = self.data.shuffle(seed=seed)
            for batch in shuffled.iter(batch_size=256):
                yield from batch[self.column]
            return
        for row in _brief_waits(self.data.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER,
                                                  **_ONE_SHARD_AT_A_TIME)):
            yield row[self.column]

    def record(self) -> dict[str, Any]:
        """What the results say about the dataset."""
        return {"name": self.spec, "origin": self.origin, "location": self.location,
                "revision": self.revision or None, "streamed": self.streamed,
                "pretokenized": self.pretokenized, "column": self.column,
                "shuffle_buffer": SHUFFLE_BUFFER if self.streamed else None}


def dataset_key(spec: str) -> str:
    """Identifies the content ``spec`` names, for cache keys, without opening it: a local
    path with its files' sizes and times (an edited file gets a new key), a cached Hub
    dataset with its snapshot's commit, the embedded corpus with the package version."""
    if spec.startswith(reference.DATASET_PREFIX):
        from pytest_saebench import __version__

        return f"{spec}@{__version__}@w{WINDOWS_VERSION}"
    path = Path(spec).expanduser()
    if path.exists():
        return f"{spec}@{_stamp(path)}@w{WINDOWS_VERSION}"
    snapshot = hub.cached_dataset_snapshot(spec)
    return f"{spec}@{snapshot.name if snapshot else 'hub'}@w{WINDOWS_VERSION}"


def _stamp(path: Path) -> str:
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    return str([(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size,
                 p.stat().st_mtime_ns) for p in files])


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: datasets wraps the parser's useful message in a generic one."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _first_line(exc: BaseException) -> str:
    cause = _root_cause(exc)
    return f"{type(cause).__name__}: {first_line(cause)}"


def _local(path: Path, spec: str, split: str) -> Any:
    """A local path as a stream (a ``save_to_disk`` folder is memory-mapped, then streamed)."""
    if path.is_dir() and any((path / name).exists() for name in _SAVED):
        loaded = datasets.load_from_disk(str(path))
        ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if len(ds) == 0:
            raise SaebenchError(f"dataset {spec}: has no rows; give a dataset with text in it")
        return ds.to_iterable_dataset(num_shards=min(64, len(ds)))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _LOADERS)
        if not files:
            raise SaebenchError(f"dataset {spec}: directory holds no {'/'.join(_LOADERS)} files")
        return datasets.load_dataset(_LOADERS[files[0].suffix], split="train", streaming=True,
                                     data_files=[str(f) for f in files])
    if path.stat().st_size == 0:
        raise SaebenchError(f"dataset {spec}: the file is empty")
    if path.suffix not in _LOADERS:
        raise SaebenchError(f"dataset {spec}: unknown file type '{path.suffix}'; use one of "
                            f"{', '.join(_LOADERS)}")
    return datasets.load_dataset(_LOADERS[path.suffix], data_files=str(path), split="train",
                                 streaming=True)


def open_hub_dataset(spec: str, split: str = "train") -> tuple[Any, str, str, str]:
    """``(stream, origin, location, revision)`` of a Hub dataset: its cached snapshot when
    there is one, else (online) the Hub itself; offline and not cached, one line."""
    snapshot = hub.cached_dataset_snapshot(spec)
    if snapshot is not None:
        ds = datasets.load_dataset(str(snapshot), split=split, streaming=True)
        return ds, "hub cache", str(snapshot), snapshot.name
    if hub.offline():
        raise SaebenchError(hub.dataset_not_cached(spec))
    return datasets.load_dataset(spec, split=split, streaming=True), "hub", spec, ""


def load_text_dataset(spec: str, split: str = "train") -> DatasetSource:
    """Open ``spec``: ``saebench-reference:SPLIT``, a local path (text/jsonl/parquet/arrow/csv
    file, a folder of them, or a ``save_to_disk`` folder) or a Hub dataset name, with a text
    column or a pretokenized ``tokens``/``input_ids`` column."""
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report failures once
    if spec.startswith(reference.DATASET_PREFIX):
        ds = reference.corpus_dataset(spec.removeprefix(reference.DATASET_PREFIX))
        return DatasetSource(spec, ds, "text", False, False, "embedded corpus", spec)
    path = Path(spec).expanduser()
    if missing_path(spec):
        raise SaebenchError(f"dataset {spec}: no such file or directory")
    revision = ""
    try:
        if path.exists():
            data, origin, location = _local(path, spec, split), "local path", str(path)
        else:
            data, origin, location, revision = open_hub_dataset(spec, split)
        peek = iter(data)
        first = next(peek, None)
        _close(peek)
    except SaebenchError:
        raise
    except Exception as exc:  # datasets raises many types for a bad name or file
        if path.exists():
            raise SaebenchError(f"dataset {spec}: cannot be read ({_first_line(exc)}); check "
                                f"that it is {'/'.join(_LOADERS)} data with a 'text' (or "
                                "'tokens'/'input_ids') field") from None
        raise SaebenchError(f"dataset '{spec}' could not be loaded ({_first_line(exc)}); pass "
                            "a local path or a Hugging Face dataset name via "
                            "--saebench-dataset") from None
    if first is None:
        raise SaebenchError(f"dataset {spec}: has no rows; give a dataset with text in it")
    column, pretokenized = _column(first, spec)
    return DatasetSource(spec, data, column, pretokenized, True, origin, location, revision)


def _column(row: dict[str, Any], spec: str) -> tuple[str, bool]:
    """The column to read (SAELens's order: tokens, input_ids, text, any other text)."""
    for name in TOKEN_COLUMNS:
        if name in row:
            value = row[name]
            if not isinstance(value, list | tuple) or not all(
                    isinstance(t, int) and not isinstance(t, bool) for t in value):
                raise SaebenchError(f"dataset {spec}: column '{name}' must hold lists of token "
                                    f"ids, got {type(value).__name__}")
            return name, True
    if "text" in row:
        if not isinstance(row["text"], str):
            raise SaebenchError(f"dataset {spec}: column 'text' holds "
                                f"{type(row['text']).__name__} values, not strings; store the "
                                "text as strings")
        return "text", False
    for name, value in row.items():
        if isinstance(value, str):
            return name, False
    raise SaebenchError(f"dataset {spec}: no text column (columns: {', '.join(row)}); provide "
                        "a 'text' column, or token ids in 'tokens' or 'input_ids'")


def _separator(tokenizer: Any, separator: Any) -> int | None:
    """SAELens's ``sequence_separator_token`` (bos/eos/sep/an id/None) as a token id."""
    if separator is None or (isinstance(separator, int) and not isinstance(separator, bool)):
        return separator
    ids = {"bos": _bos(tokenizer), "eos": tokenizer.eos_token_id,
           "sep": getattr(tokenizer, "sep_token_id", None)}
    return ids.get(separator)


def _bos(tokenizer: Any) -> int | None:
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def _text_documents(tokenizer: Any, texts: Iterator[str]) -> Iterator[torch.Tensor]:
    """Each document's tokens, without special tokens (as ``to_tokens(prepend_bos=False)``),
    tokenized 64 at a time."""
    while batch := list(itertools.islice(texts, 64)):
        for ids in tokenizer([t if isinstance(t, str) else "" for t in batch],
                             add_special_tokens=False)["input_ids"]:
            yield torch.tensor(ids, dtype=torch.long)


def token_windows(
    tokenizer: Any,
    source: DatasetSource | datasets.Dataset,
    n_windows: int,
    context_size: int,
    prepend_bos: bool,
    seed: int,
    separator: Any = "bos",
    concat: bool = True,
    d_vocab: int | None = None,
) -> torch.Tensor:
    """``[n_windows, context_size]`` token ids from the first documents of ``source`` in the
    order ``seed`` fixes, exactly as SAELens's ``ActivationsStore`` builds its windows.

    Text: ``concat_and_batch_sequences`` with BOS at each window's start when
    ``prepend_bos``, ``separator`` between documents and (``concat=False``) documents shorter
    than a window dropped. Pretokenized: each row cut to ``context_size``; ids must be below
    ``d_vocab``.
    """
    from pytest_saebench.quiet_sae_lens import concat_and_batch_sequences

    if isinstance(source, datasets.Dataset):
        source = DatasetSource("dataset", source, "text", False, False, "embedded corpus", "")
    bos = _bos(tokenizer)
    if bos is None and prepend_bos and not source.pretokenized:
        raise SaebenchError("the tokenizer has neither a BOS nor an EOS token; cannot "
                            "prepend BOS")
    rows = source.rows(seed)
    try:
        if source.pretokenized:
            windows = _pretokenized_windows(source, rows, context_size, d_vocab)
        else:
            windows = concat_and_batch_sequences(
                _text_documents(tokenizer, rows), context_size,
                begin_batch_token_id=bos if prepend_bos else None,
                sequence_separator_token_id=_separator(tokenizer, separator),
                disable_concat_sequences=not concat)
        out = list(itertools.islice(windows, n_windows))
    finally:
        _close(rows)
    if len(out) < n_windows:
        raise SaebenchError(
            f"dataset {source.spec} has only {len(out) * context_size} tokens in windows of "
            f"{context_size} but the eval needs {n_windows * context_size} ({n_windows} "
            "windows); use a larger dataset or a smaller suite")
    return torch.stack(out).to(torch.long)


@contextlib.contextmanager
def _brief_wait():
    """A parquet stream sleeps ``SLEEP_TIME_ON_THREADS_SHUTDOWN`` (5 s) whenever it stops,
    read to the end or closed early, so that Arrow's reader threads end before the
    interpreter does (apache/arrow#39862). The plugin's process goes on evaluating long after,
    and 0.1 s is the wait reported to be enough, so a read is not charged 5 s each time."""
    saved = datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = min(saved, 0.1)
    try:
        yield
    finally:
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = saved


def _brief_waits(stream: Any) -> Iterator[Any]:
    """``stream``'s items, with :func:`_brief_wait` around each step and the close only."""
    it = iter(stream)
    try:
        while True:
            with _brief_wait():
                item = next(it, _END)
            if item is _END:
                return
            yield item
    finally:
        _close(it)


_END = object()


def _close(rows: Iterator[Any]) -> None:
    """Stop reading ``rows`` now (see :func:`_brief_wait`)."""
    with _brief_wait():
        rows.close()  # type: ignore[attr-defined]


def _pretokenized_windows(source: DatasetSource, rows: Iterator[Any], context_size: int,
                          d_vocab: int | None) -> Iterator[torch.Tensor]:
    for row in rows:
        if len(row) < context_size:
            raise SaebenchError(
                f"dataset {source.spec}: pretokenized rows of {len(row)} tokens are shorter "
                f"than the checkpoint's context_size {context_size}; pretokenize it with "
                f"context_size >= {context_size} (SAELens's PretokenizeRunner)")
        window = torch.tensor(row[:context_size], dtype=torch.long)
        if d_vocab is not None and len(window) and int(window.max()) >= d_vocab:
            raise SaebenchError(
                f"dataset {source.spec}: column '{source.column}' holds token id "
                f"{int(window.max())} but the model's vocabulary has {d_vocab} ids; it was "
                "tokenized for another model (use a dataset tokenized with this model's "
                "tokenizer, or a text dataset)")
        yield window
