"""Options that several commands share, declared once (as sqlite-utils shares its decorators)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bulkgene.config import DEFAULT_BASE_URL

F = TypeVar("F", bound=Callable[..., object])


def server_options(function: F) -> F:
    """``--base-url``, ``--api-key-file`` and ``--api-key``: where to ask, and as whom."""
    for option in reversed((
        click.option("--base-url", envvar="BULKGENE_BASE_URL", default=DEFAULT_BASE_URL,
                     show_default=True, help="API root; env BULKGENE_BASE_URL."),
        click.option("--api-key-file", type=click.Path(path_type=Path, dir_okay=False),
                     help="File whose first line is your NCBI API key (10 req/s instead "
                     "of 5); a BOM and surrounding whitespace are ignored."),
        click.option("--api-key", help="NCBI API key. Visible to other users in `ps`: "
                     "prefer $NCBI_API_KEY or --api-key-file."),
    )):
        function = option(function)
    return function


class OutDir(click.Path):
    """``--out``: a directory to create or resume in, never ``''`` (which is the current
    directory to pathlib) nor the root directory, both of which a run would fill."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name the output directory, e.g. --out genes/ (--out . "
                      "for the current directory)", param, ctx)
        path = Path(os.fsdecode(super().convert(value, param, ctx)))
        if path.resolve() == Path(path.resolve().anchor):
            self.fail(f"{str(value)!r} is the root directory: name a directory to create or "
                      "to resume in, e.g. --out genes/", param, ctx)
        return path


class BudgetDir(click.Path):
    """``--budget-dir``: never ``''``, which pathlib reads as the current directory (a run
    then wrote ./127.0.0.1/anonymous where it was started)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name the directory the runs sharing the key's budget use, "
                      "e.g. --budget-dir /groups/lab/bulkgene-budget, or leave it out for "
                      "~/.cache/bulkgene/budget", param, ctx)
        return super().convert(value, param, ctx)


class FiniteRange(click.FloatRange):
    """A float range that refuses ``nan`` and ``inf``: ``nan`` passes every range check
    (it compares false with both bounds), and no timer or rate can use it."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class Finite(click.types.FloatParamType):
    """A plain float option that refuses ``nan`` and ``inf``."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = Finite()
