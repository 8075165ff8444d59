"""The NCBI Datasets gene API itself: request shapes per endpoint, page and TSV validation."""
