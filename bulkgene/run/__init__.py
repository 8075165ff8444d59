"""One run: prepare, pipeline, checkpoint, lock, array split, summary, status and verify."""
