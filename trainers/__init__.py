"""Training: one loop, every alignment method a loss over per-sequence log-probabilities."""
