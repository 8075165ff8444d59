"""Options that several commands share, declared once (as sqlite-utils shares its decorators)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
