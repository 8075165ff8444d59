"""Reading GeneID input: lines and columns of files, the parsed plan, the requested-ID set."""
