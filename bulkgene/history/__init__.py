"""NCBI's gene_history: where a missing or replaced GeneID went (read, followed, downloaded and cached)."""
