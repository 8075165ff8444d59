"""``bulkgene export``: a run's records as one flat table, with NCBI's field names."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulkgene.errors import BulkgeneError, ConfigError

EXPORT_EXAMPLES = """
\b
Examples:
  bulkgene export genes/ --to genes.tsv                 # the default fields, NCBI's titles
  bulkgene export genes/ --to genes.parquet --fields query,gene-id,symbol,tax-id,synonyms
  bulkgene export genes/ --to genes.csv.gz --with-missing   # + a row per missing GeneID
  bulkgene export genes/ --to go.tsv --fields gene-id,go-bp-id,go-bp-name --explode go-bp-id
  bulkgene export genes/ --to - --fields query,gene-id --explode query | sort -n  # your IDs
  bulkgene export genes/ --to all.parquet --fields all   # every field
  bulkgene export --list-fields
  bulkgene export genes/ --to go.tsv --fields "$(bulkgene export --list-fields --plain | grep go-)"

\b
The format comes from the suffix (.tsv .csv .jsonl .parquet, each but Parquet also .gz) or
--format (.txt and .json need it: they promise other things). Every shard of every task is
read (an array's task-* directories too), only as far as each checkpoint committed; memory
stays flat whatever the run's size. A file is written under a temporary name and renamed
when complete; a device, FIFO or /dev/stdout is written as a stream (TSV by default), never
replaced; the run's own files are refused. A run that is not complete, or one task of an
array, needs --partial.
"""


def _list_fields(plain: bool) -> str:
    from bulkgene.ncbi.fields import FIELD_LIST
    from bulkgene.results.table import DEFAULT_FIELDS

    if plain:  # one name a line, nothing else: for --fields "$(... | grep ...)"
        return "\n".join(["query", *(f.mnemonic for f in FIELD_LIST)])

    rows = [("query", "Query", "int", "list", "the GeneIDs you asked for that this record "
             "answers (an old ID for a replaced gene)")]
    rows += [(f.mnemonic, f.title, f.kind, "list" if f.is_list else "", f.meaning)
             for f in FIELD_LIST]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'FIELD'.ljust(width)}  TYPE      MEANING (column title)"]
    for name, title, kind, many, meaning in rows:
        kind_text = f"{kind}{'[]' if many else ''}".ljust(8)
        lines.append(f"{name.ljust(width)}  {kind_text}  {meaning} ({title})")
    lines.append("")
    lines.append(f"default: {','.join(DEFAULT_FIELDS)}")
    lines.append("[] fields may hold several values: joined with --list-separator in TSV and "
                 "CSV, list columns in Parquet and JSON lines; --explode FIELD gives one row "
                 "per value. --fields also takes NCBI's column titles and the JSON keys "
                 "(gene_id), and 'all'; --plain lists the names alone. Sources: "
                 "docs/ncbi-gene-fields.md")
    return "\n".join(lines)


@click.command(epilog=EXPORT_EXAMPLES)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
                required=False)
@click.option("--to", "target", metavar="FILE",
              help="The table to write (- for standard output). Its suffix sets the format.")
@click.option("--fields", metavar="F,...",
              help="Field mnemonics, separated by commas or line breaks (see --list-fields), "
              "or all. [default: query, gene-id, symbol, description, tax-id, tax-name, "
              "gene-type, chromosomes]")
@click.option("--format", "table_format", type=click.Choice(["tsv", "csv", "jsonl", "parquet"]),
              default=None, help="The table format. [default: from the suffix of --to]")
@click.option("--explode", metavar="FIELD", default=None,
              help="One row per value of this list field (fields under the same lists follow "
              "it); --explode query gives one row per GeneID you asked for.")
@click.option("--with-missing", is_flag=True,
              help="Add one row per missing GeneID (query, missing_reason and any explanation "
              "columns of missing.tsv).")
@click.option("--list-separator", default=";", show_default=True, metavar="TEXT",
              help="Joins a list field's values in TSV and CSV (NCBI's own TSV uses ','); "
              "not empty.")
@click.option("--partial", is_flag=True,
              help="Export a run that is not complete (interrupted, failed batches, still "
              "running): what is committed so far.")
@click.option("--list-fields", is_flag=True, help="Print the fields with their meaning and exit.")
@click.option("--plain", is_flag=True,
              help="With --list-fields: the names alone, one a line (for --fields).")
def export(out_dir: Path | None, target: str | None, fields: str | None, table_format: str | None,
           explode: str | None, with_missing: bool, list_separator: str, partial: bool,
           list_fields: bool, plain: bool) -> None:
    """Write the records of the run in DIR as one flat table: TSV, CSV, JSON lines, Parquet.

    One row per record (gene), with NCBI's gene table fields (the mnemonics of `dataformat
    tsv gene --fields` and the API's table_fields) and NCBI's column titles in TSV and CSV
    headers, plus a query column: the GeneIDs you asked for that each record answers, so
    that rows map back to your list (a replaced gene answers its old ID). Parquet keeps
    types (GeneIDs int64, counts integers, lists as lists) and needs the parquet extra:
    pip install 'bulkgene[parquet]'.
    """
    if list_fields:
        click.echo(_list_fields(plain))
        return
    if plain:
        raise click.UsageError("--plain goes with --list-fields")
    if out_dir is None or target is None:
        raise click.UsageError("give the run's DIR and --to FILE (or --list-fields)")
    try:
        is_dir = out_dir.is_dir()
    except OSError as exc:  # a directory another user's permissions hide
        click.echo(f"bulkgene: error: cannot read {out_dir}: {exc.strerror}", err=True)
        sys.exit(1)
    if not is_dir:
        from bulkgene.results.status import refuse_no_run

        click.echo(f"bulkgene: error: {refuse_no_run(out_dir)}", err=True)
        sys.exit(1)
    from bulkgene.cli import signals
    from bulkgene.export import export_run
    from bulkgene.export.table_file import is_stream_target

    signals.now(f"while exporting {out_dir}",
                "standard output got part of the table" if target == "-" else
                f"{target} got part of the table" if is_stream_target(target) else
                f"{target} was left as it was (the table is written under a temporary name "
                "until it is complete)")
    try:
        result = export_run(out_dir, target, fields=fields, table_format=table_format,
                            explode=explode, with_missing=with_missing,
                            list_separator=list_separator, partial=partial)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except BulkgeneError as exc:
        click.echo(f"bulkgene: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if target != "-":
        missing = f" + {result.missing_rows} missing" if with_missing else ""
        click.echo(f"bulkgene: wrote {result.rows} rows ({result.records} from records"
                   f"{missing}) of {len(result.columns)} columns to {target} "
                   f"({result.format})", err=True)
    if result.left_out:
        click.echo(f"bulkgene: {result.left_out} requested GeneIDs have no record, so no row "
                   f"(missing.tsv says why); --with-missing adds a row for each", err=True)
