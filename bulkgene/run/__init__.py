"""One download: prepare the directory, run the pipeline, share the key's budget, write the summary."""
