"""``bulkgene export``: a run's records as one flat table (TSV, CSV, JSON lines or Parquet)."""

from bulkgene.export.table_file import FORMATS, ExportResult, export_run, format_of

__all__ = ["FORMATS", "ExportResult", "export_run", "format_of"]
