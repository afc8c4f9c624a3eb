"""Scores: bits per byte and word perplexity on a split, chat scores (end of turn, reply ranking)."""
