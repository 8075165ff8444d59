"""NCBI's gene_history: where a missing or replaced GeneID went (read, followed, downloaded and cached)."""

DEFAULT_HISTORY_URL = "https://ftp.ncbi.nlm.nih.gov/gene/DATA/gene_history.gz"
HISTORY_ENV = "BULKGENE_HISTORY"
