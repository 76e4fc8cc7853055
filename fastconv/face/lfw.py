"""Parsers for the LFW protocol files and for user pair lists.

File formats (see LFW ``README.txt``):

* ``pairs.txt``: header ``"<n_folds> <n>"``, then per fold ``n`` matched lines
  ``name n1 n2`` followed by ``n`` mismatched lines ``name1 n1 name2 n2``.
* ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``"<n>"``, then ``n`` matched
  and ``n`` mismatched lines (one fold).
* ``people.txt``: header ``"<n_folds>"``, then per fold a count line ``"<m>"`` and
  ``m`` lines ``name n_images``.
* ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: header ``"<m>"`` then ``m`` lines.

Every malformed line raises ``ValueError("<file>:<line>: ...")``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Pair",
    "image_relpath",
    "read_pairs",
    "read_people",
    "read_pairs_csv",
    "PairList",
    "read_pairs_any",
    "is_lfw_pairs_file",
    "flatten_folds",
    "pair_identities",
]


@dataclass(frozen=True)
class Pair:
    """One verification pair; ``a``/``b`` are paths relative to the image root."""

    a: str
    b: str
    same: bool


def image_relpath(name: str, number: int) -> str:
    """LFW image path for person ``name`` and 1-based image ``number``: ``"Name/Name_0001.jpg"``."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a non-empty string without path separators, got {name!r}")
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"number must be an int, got {type(number).__name__}")
    if number < 1:
        raise ValueError(f"image number must be >= 1, got {number}")
    return f"{name}/{name}_{number:04d}.jpg"


def _lines(path):
    """Yield ``(line_number, fields)`` for the non-blank lines of a whitespace-separated file."""
    with open(path, "r", encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if fields:
                yield lineno, fields


def _int(path, lineno, text, what):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be an integer, got {text!r}") from None
    return value


def _positive(path, lineno, text, what):
    value = _int(path, lineno, text, what)
    if value < 1:
        raise ValueError(f"{path}:{lineno}: {what} must be >= 1, got {value}")
    return value


def _parse_pair(path, lineno, fields, same: bool) -> Pair:
    if same:
        if len(fields) != 3:
            raise ValueError(
                f"{path}:{lineno}: expected 3 fields 'name n1 n2' for a matched pair, "
                f"got {len(fields)}: {' '.join(fields)!r}"
            )
        name, n1, n2 = fields
        return Pair(
            image_relpath(name, _positive(path, lineno, n1, "image number")),
            image_relpath(name, _positive(path, lineno, n2, "image number")),
            True,
        )
    if len(fields) != 4:
        raise ValueError(
            f"{path}:{lineno}: expected 4 fields 'name1 n1 name2 n2' for a mismatched pair, "
            f"got {len(fields)}: {' '.join(fields)!r}"
        )
    name1, n1, name2, n2 = fields
    return Pair(
        image_relpath(name1, _positive(path, lineno, n1, "image number")),
        image_relpath(name2, _positive(path, lineno, n2, "image number")),
        False,
    )


def read_pairs(path) -> list[list[Pair]]:
    """Read ``pairs.txt`` (-> n_folds folds) or ``pairsDev*.txt`` (-> one fold).

    Each fold lists its matched pairs first, then its mismatched pairs.
    """
    lines = list(_lines(path))
    if not lines:
        raise ValueError(f"{path}:1: empty pairs file, expected a header '<n_folds> <n>' or '<n>'")
    lineno, header = lines[0]
    if len(header) == 2:
        n_folds = _positive(path, lineno, header[0], "number of folds")
        n = _positive(path, lineno, header[1], "pairs per fold")
    elif len(header) == 1:
        n_folds, n = 1, _positive(path, lineno, header[0], "number of pairs")
    else:
        raise ValueError(
            f"{path}:{lineno}: expected a header '<n_folds> <n>' or '<n>', got {len(header)} fields"
        )
    expected = n_folds * 2 * n
    body = lines[1:]
    if len(body) < expected:
        last = body[-1][0] if body else lineno
        raise ValueError(
            f"{path}:{last}: header promises {n_folds} fold(s) x {2 * n} pairs = {expected} lines, "
            f"file ends after {len(body)}"
        )
    if len(body) > expected:
        raise ValueError(
            f"{path}:{body[expected][0]}: header promises {expected} pair lines, found extra line "
            f"{' '.join(body[expected][1])!r}"
        )
    folds = []
    for f in range(n_folds):
        chunk = body[f * 2 * n:(f + 1) * 2 * n]
        fold = [_parse_pair(path, ln, flds, same=i < n) for i, (ln, flds) in enumerate(chunk)]
        folds.append(fold)
    return folds


def _read_people_block(path, lines, start, count, fold_label):
    people: dict[str, int] = {}
    for lineno, fields in lines[start:start + count]:
        if len(fields) != 2:
            raise ValueError(
                f"{path}:{lineno}: expected 2 fields 'name n_images', got {len(fields)}: "
                f"{' '.join(fields)!r}"
            )
        name, n_images = fields
        if name in people:
            raise ValueError(f"{path}:{lineno}: {name!r} listed twice in {fold_label}")
        people[name] = _positive(path, lineno, n_images, "number of images")
    return people


def read_people(path) -> list[dict[str, int]]:
    """Read ``people.txt`` (-> n_folds dicts ``{name: n_images}``) or ``peopleDev*.txt`` (-> one)."""
    lines = list(_lines(path))
    if not lines:
        raise ValueError(f"{path}:1: empty people file, expected a header '<n>'")
    lineno, header = lines[0]
    if len(header) != 1:
        raise ValueError(f"{path}:{lineno}: expected a header with 1 integer, got {len(header)} fields")
    n = _positive(path, lineno, header[0], "header count")
    # people.txt: the second line is a fold size (one field); peopleDev*: a 'name count' line.
    multi = len(lines) > 1 and len(lines[1][1]) == 1 and lines[1][1][0].isdigit()
    if not multi:
        if len(lines) - 1 != n:
            where = lines[n + 1][0] if len(lines) - 1 > n else lines[-1][0]
            raise ValueError(
                f"{path}:{where}: header promises {n} people, file has {len(lines) - 1} lines"
            )
        return [_read_people_block(path, lines, 1, n, "the file")]
    folds = []
    pos = 1
    for f in range(n):
        if pos >= len(lines):
            raise ValueError(
                f"{path}:{lines[-1][0]}: header promises {n} folds, file ends after {f}"
            )
        ln, fields = lines[pos]
        if len(fields) != 1:
            raise ValueError(
                f"{path}:{ln}: expected the size of fold {f + 1} (one integer), got {' '.join(fields)!r}"
            )
        count = _positive(path, ln, fields[0], f"size of fold {f + 1}")
        if pos + 1 + count > len(lines):
            raise ValueError(
                f"{path}:{lines[-1][0]}: fold {f + 1} promises {count} people, file ends after "
                f"{len(lines) - pos - 1}"
            )
        folds.append(_read_people_block(path, lines, pos + 1, count, f"fold {f + 1}"))
        pos += 1 + count
    if pos != len(lines):
        raise ValueError(
            f"{path}:{lines[pos][0]}: header promises {n} folds, found extra line "
            f"{' '.join(lines[pos][1])!r}"
        )
    return folds


_TRUE = {"1", "true", "same", "yes"}
_FALSE = {"0", "false", "different", "no"}


def _label(text):
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    return None


_LABEL_COLUMNS = {"label", "same", "is_same", "issame", "match", "target"}


class PairList(list):
    """A list of :class:`Pair` read from a file; ``skipped_rows`` = [(line, why)] for every row not read."""

    def __init__(self, pairs=(), skipped_rows=()):
        super().__init__(pairs)
        self.skipped_rows = list(skipped_rows)

    def describe_skipped(self) -> str:
        """``"skipped 1 header row (line 1) and 2 blank rows (lines 4, 6)"``, or ``""``."""
        parts = []
        for why in dict.fromkeys(w for _, w in self.skipped_rows):
            lines = [str(n) for n, w in self.skipped_rows if w == why]
            parts.append(f"{len(lines)} {why} row{'s' if len(lines) > 1 else ''} "
                         f"(line{'s' if len(lines) > 1 else ''} {', '.join(lines)})")
        return "skipped " + " and ".join(parts) if parts else ""


def _is_header(row):
    """A header names its columns: the third is one of ``label, same, is_same, issame, match, target``."""
    return row[2].strip().lower() in _LABEL_COLUMNS


def read_pairs_csv(path) -> PairList:
    """Read a user pair list ``path_a,path_b,label`` (label 1/0/true/false/same/different).

    UTF-8 with or without a byte-order mark. An optional first row is a header when its third
    column is named ``label`` (or ``same``, ``is_same``, ``issame``, ``match``, ``target``); any other
    row with a bad label raises ValueError. Blank rows are skipped; the header and blank rows
    are listed in the result's ``skipped_rows``. Paths are kept as written (relative to the image
    root, or absolute).
    """
    pairs, skipped = [], []
    with open(path, "r", encoding="utf-8-sig", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                skipped.append((lineno, "blank"))
                continue
            if len(row) != 3:
                raise ValueError(
                    f"{path}:{lineno}: expected 3 comma-separated fields 'path_a,path_b,label', "
                    f"got {len(row)}: {','.join(row)!r}"
                )
            a, b, lab = (c.strip() for c in row)
            same = _label(lab)
            if same is None:
                if not pairs and not any(why == "header" for _, why in skipped) and _is_header(row):
                    skipped.append((lineno, "header"))
                    continue
                raise ValueError(
                    f"{path}:{lineno}: label must be 1/0/true/false/same/different, got {lab!r}"
                    + (" (a header row names its third column 'label')" if not pairs else "")
                )
            if not a or not b:
                raise ValueError(f"{path}:{lineno}: empty image path")
            pairs.append(Pair(a, b, same))
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return PairList(pairs, skipped)


def is_lfw_pairs_file(path) -> bool:
    """True when the first non-blank line is an LFW header (one or two integers)."""
    with open(path, "r", encoding="utf-8-sig") as fh:
        for line in fh:
            fields = line.split()
            if fields:
                return len(fields) in (1, 2) and all(f.lstrip("+").isdigit() for f in fields)
    return False


def flatten_folds(folds: list[list[Pair]]):
    """``folds`` -> (pairs, fold_index int64 (n_pairs,), 0-based)."""
    pairs = [p for fold in folds for p in fold]
    index = np.concatenate(
        [np.full(len(fold), i, dtype=np.int64) for i, fold in enumerate(folds)]
    ) if folds else np.zeros(0, dtype=np.int64)
    return pairs, index


def read_pairs_any(path):
    """LFW pairs file (auto-detected by header) or CSV -> (pairs, folds or None).

    ``folds`` is an int64 fold index per pair when the file has more than one fold.
    """
    if not os.path.isfile(path):
        raise ValueError(f"pairs file {path} does not exist")
    try:
        if is_lfw_pairs_file(path):
            pairs, folds = flatten_folds(read_pairs(path))
            return pairs, (folds if folds.size and folds.max() > 0 else None)
        return read_pairs_csv(path), None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def pair_identities(pairs) -> set[str]:
    """Identity names (first path component) of every image in ``pairs``."""
    out = set()
    for p in pairs:
        for rel in (p.a, p.b):
            out.add(rel.replace("\\", "/").split("/")[0])
    return out
