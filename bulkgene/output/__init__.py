"""The output directory: the shard store, every output file name, durable-write helpers."""
