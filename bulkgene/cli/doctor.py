"""The ``bulkgene doctor`` command: run the preflight checks, print a table, exit 0 or 1."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import traceback
from pathlib import Path

import click

from bulkgene.cli.console import print_out, read_api_key
from bulkgene.cli.options import FiniteRange, server_options
from bulkgene.config import ENDPOINTS, ApiQuery, NetworkSpec, Timeouts, default_of
from bulkgene.errors import ConfigError

DOCTOR_EXAMPLES = """
\b
Examples:
  bulkgene doctor
  NCBI_API_KEY=... bulkgene doctor          # is the key accepted (10 requests/s)?
  HTTPS_PROXY=http://proxy.example.org:3128 bulkgene doctor
  srun -N1 bulkgene doctor                  # on a compute node, before a long sbatch job
  bulkgene doctor --json | jq .fetch_endpoint

\b
Exit codes: 0 a fetch would work (at least one endpoint answers with a valid page),
1 it would not (each failing row says what to do), 2 usage.
"""

_MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info", "skip": "skip"}
_WIDTH = 100


@click.command(epilog=DOCTOR_EXAMPLES)
@server_options
@click.option("--endpoint", type=click.Choice(ENDPOINTS),
              default=default_of(ApiQuery, "endpoint"), show_default=True,
              help="The endpoint fetch will be asked to use; all three are checked.")
@click.option("--timeout", "timeout_s", type=FiniteRange(1, 600), default=20.0,
              show_default=True, help="Seconds to wait for a connection, and for each answer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.pass_context
def doctor(ctx: click.Context, base_url: str, api_key_file: Path | None, api_key: str | None,
           endpoint: str, timeout_s: float, as_json: bool) -> None:
    """Check that this machine can fetch from NCBI, before a long job (or on a new HPC node).

    Resolves and reaches the base URL (naming any proxy from HTTPS_PROXY/HTTP_PROXY/NO_PROXY),
    verifies TLS (SSL_CERT_FILE honoured; says why a certificate fails), asks each endpoint
    once for GeneID 7157 and checks the page, and reports whether the API key was accepted,
    the server's version, the clock's skew and deprecated or retired endpoints. Three
    requests at most, paced; the key never appears in the output.
    """
    from bulkgene.net.doctor import diagnose

    try:
        key = read_api_key(api_key, api_key_file)
        network = NetworkSpec(base_url=base_url, api_key=key, timeouts=Timeouts(
            connect_s=timeout_s, read_stall_s=timeout_s, attempt_s=timeout_s * 2))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    source = ctx.get_parameter_source("base_url")
    origin = {click.core.ParameterSource.ENVIRONMENT: "from BULKGENE_BASE_URL",
              click.core.ParameterSource.COMMANDLINE: "from --base-url"}.get(
        source, "the default") if source is not None else "the default"
    try:
        diagnosis = asyncio.run(diagnose(network, endpoint, origin))
    except Exception:  # noqa: BLE001 - a bug: show it, but never the key
        report = traceback.format_exc()
        if key is not None:
            report = report.replace(key.reveal(), "***")
        click.echo(f"{report}\nbulkgene: internal error in doctor (a bug; please report it "
                   "with the traceback above)", err=True)
        sys.exit(1)
    if as_json:
        text = diagnosis.as_json().decode()
    else:
        text = _table(diagnosis.checks, diagnosis.verdict, diagnosis.requests)
    if key is not None:
        text = text.replace(key.reveal(), "***")
    print_out(text, nl=False)
    sys.exit(0 if diagnosis.ok else 1)


def _table(checks: tuple[object, ...], verdict: str, requests: int) -> str:
    from bulkgene.net.doctor_report import Check

    rows = [c for c in checks if isinstance(c, Check)]
    name_width = max(len("CHECK"), *(len(c.name) for c in rows))
    indent = " " * (name_width + 10)
    lines = [f"{'CHECK':<{name_width}}  RESULT  DETAIL"]
    for check in rows:
        head = f"{check.name:<{name_width}}  {_MARKS[check.status]:<6}  "
        lines.append(textwrap.fill(check.detail, _WIDTH, initial_indent=head,
                                   subsequent_indent=indent, break_on_hyphens=False, break_long_words=False))
        if check.advice and check.status in ("fail", "warn"):
            lines.append(textwrap.fill(check.advice, _WIDTH, initial_indent=indent + "-> ",
                                       subsequent_indent=indent + "   ",
                                       break_on_hyphens=False, break_long_words=False))
    lines.append("")
    sent = f"{requests} request{'s' if requests != 1 else ''} sent"
    lines.append(textwrap.fill(f"{verdict}; {sent}", _WIDTH, break_on_hyphens=False,
                               break_long_words=False))
    return "\n".join(lines) + "\n"
