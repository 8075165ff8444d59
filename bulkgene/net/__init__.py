"""Talking to the server: one HTTP attempt, the retry policy, the pacer, the batch client."""
