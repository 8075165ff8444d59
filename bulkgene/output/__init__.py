"""What a run commits to its directory: the shard store, the checkpoint, claims on merged genes."""
