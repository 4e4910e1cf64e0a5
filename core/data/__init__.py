"""Data: formats (raw records -> normalised examples), loading and mixing,
tokenisation with loss masks, and collation. Knows nothing of the training loop."""
