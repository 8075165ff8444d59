"""What ``bulkgene.fetch`` was given, checked and read as meant: the IDs, the keywords, their types.

Easy mistakes get a message that names the argument and what to give instead: a gene symbol
where a GeneID belongs, a rate as text, ``as_frame="yes"``. Settings the caller leaves out
come from the environment variables the CLI reads (NCBI_API_KEY, BULKGENE_BASE_URL,
BULKGENE_BUDGET_DIR), so a notebook set up as the README sets up a shell behaves the same.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from bulkgene.errors import InputError
from bulkgene.model import Snapshot

Progress = bool | Callable[[Snapshot], None]

# fetch's options -> (config group, field); the CLI's names where they differ
OPTIONS: dict[str, tuple[str, str]] = {
    "api_key": ("network", "api_key"),
    "base_url": ("network", "base_url"),
    "rate": ("network", "requests_per_second"),
    "concurrency": ("network", "concurrency"),
    "budget_dir": ("network", "budget_dir"),
    "max_attempts": ("retry", "max_attempts"),
    "endpoint": ("query", "endpoint"),
    "returned_content": ("query", "returned_content"),
    "page_size": ("query", "page_size"),
    "record": ("output", "record"),
    "compress": ("output", "compress"),
    "shards": ("output", "shards"),
    "batch_size": ("output", "batch_size"),
    "column": ("top", "column"),
    "restart": ("top", "restart"),
}
OWN = ("as_frame", "fields", "with_missing", "progress", "partial", "explode")
# the CLI's environment variables, read when the keyword is not given
ENVIRONMENT = {"api_key": "NCBI_API_KEY", "base_url": "BULKGENE_BASE_URL",
               "budget_dir": "BULKGENE_BUDGET_DIR"}

_NUMBER = (int, float)
_PATH = (str, PathLike)
# what each option takes: (types, in words); None is always allowed (the default)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "api_key": ((str,), "a str (the key itself)"),
    "base_url": ((str,), "a str URL"),
    "rate": (_NUMBER, "a number of requests per second, e.g. rate=5"),
    "concurrency": ((int,), "an int, e.g. concurrency=8"),
    "budget_dir": (_PATH, "a directory path (str or Path)"),
    "max_attempts": ((int,), "an int, e.g. max_attempts=8"),
    "endpoint": ((str,), "a str: gene-id, gene-id-report or dataset-report"),
    "returned_content": ((str,), "a str: COMPLETE, IDS_ONLY or COUNTS_ONLY"),
    "page_size": ((int,), "an int, 1..1000"),
    "record": ((str,), "a str: report or gene"),
    "compress": ((str,), "a str: none or gzip"),
    "shards": ((int,), "an int, e.g. shards=4"),
    "batch_size": ((int,), "an int, 1..1000"),
    "column": ((str, int), "a column number (int) or header name (str)"),
    "restart": ((bool,), "True or False"),
}
_DIGITS = re.compile(r"\s*\d+\s*")
_ID_LIST = re.compile(r"\s*\d+(?:\s*[,;\s]\s*\d+)+\s*")
_SYMBOL_ADVICE = ("bulkgene fetches NCBI GeneIDs (7157 is human TP53): convert symbols first, "
                  "e.g. with NCBI's gene_info file (Symbol -> GeneID), `datasets summary gene "
                  "symbol TP53 --taxon human`, or mygene's querymany(symbols, scopes='symbol', "
                  "fields='entrezgene', species='human')")


@dataclass(frozen=True)
class Inputs:
    """What to fetch: ID files, or GeneIDs given in memory (written to a file in ``out``)."""

    files: tuple[str, ...]
    ids_text: bytes | None  # the IDs as lines, for in-memory input


def _is_gene_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and _DIGITS.fullmatch(value) is not None


def _not_a_file(value: str | PathLike[str]) -> InputError:
    """The error for a str that is neither a GeneID nor an existing file: a symbol, a typo."""
    text = os.fspath(value)
    if not isinstance(value, PathLike) and re.fullmatch(r"[A-Za-z][A-Za-z0-9._@-]{0,39}", text) \
            and "." not in text[-5:]:
        return InputError(f"{text!r} is not a GeneID (and no file of that name exists): "
                          f"{_SYMBOL_ADVICE}")
    return InputError(f"{text!r} is neither a GeneID nor an existing ID file: give GeneIDs "
                      "(ints, or digit strings) or the path of a file with one GeneID per line")


def read_ids(ids: Any) -> Inputs:
    """GeneIDs (ints, digit strings, a comma list of them) or ID files (paths), as given."""
    if isinstance(ids, str) and _ID_LIST.fullmatch(ids) and not os.path.exists(ids):
        ids = re.split(r"[,;\s]+", ids.strip())  # "7157,672": a list, as mygene reads it
    if isinstance(ids, _PATH) and not _is_gene_id(ids):
        if not os.path.exists(ids):
            raise _not_a_file(ids)
        return Inputs((os.fspath(ids),), None)
    if isinstance(ids, (int, str)) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, (bytes, dict, bool)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be GeneIDs (a list of ints or digit strings) or the path "
                        f"of an ID file, not {type(ids).__name__}")
    items = list(ids)
    if not items:
        raise InputError("ids is empty: give at least one GeneID")
    if all(_is_gene_id(item) for item in items):
        return Inputs((), "".join(f"{str(item).strip()}\n" for item in items).encode())
    odd = next(item for item in items if not _is_gene_id(item))
    if not isinstance(odd, _PATH) or isinstance(odd, bool):
        raise TypeError(f"ids must be GeneIDs (ints or digit strings) or ID file paths; "
                        f"{odd!r} ({type(odd).__name__}) is neither")
    if any(_is_gene_id(item) for item in items) or not all(isinstance(i, _PATH) for i in items):
        raise _not_a_file(odd)  # GeneIDs and a stray string: a symbol, most likely
    for item in items:
        if not os.path.exists(item):
            raise _not_a_file(item)
    return Inputs(tuple(os.fspath(item) for item in items), None)


def check_keywords(options: dict[str, Any]) -> None:
    """TypeError naming an unknown keyword and the valid ones."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        valid = ", ".join(sorted([*OPTIONS, *OWN, "out"]))
        raise TypeError(f"bulkgene.fetch() got unknown keyword argument(s) "
                        f"{', '.join(map(repr, unknown))}; valid ones: {valid}")


def check_types(out: Any, options: dict[str, Any], as_frame: Any, with_missing: Any,
                partial: Any, progress: Any) -> None:
    """TypeError naming the argument whose value has the wrong type, and what it takes."""
    if out is not None and not isinstance(out, _PATH):
        raise TypeError(f"out must be a directory path (str or Path), not "
                        f"{type(out).__name__} {out!r}")
    for name, value in (("as_frame", as_frame), ("with_missing", with_missing),
                        ("partial", partial)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be True, False or a callable that takes a "
                        f"bulkgene.Snapshot, not {type(progress).__name__} {progress!r}")
    for name, value in options.items():
        types, words = _TYPES[name]
        if value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise TypeError(f"{name} must be {words}, not {type(value).__name__} {value!r}")


def with_environment(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with what the CLI would read from the environment where they are silent."""
    merged = dict(options)
    for name, variable in ENVIRONMENT.items():
        if merged.get(name) is None and (value := os.environ.get(variable, "").strip()):
            merged[name] = value
    if "column" in merged and isinstance(merged["column"], int):
        merged["column"] = str(merged["column"])
    if isinstance(merged.get("budget_dir"), PathLike):
        merged["budget_dir"] = Path(os.fspath(merged["budget_dir"]))
    return merged
