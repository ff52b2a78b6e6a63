"""Memory: batch sizes that adapt to what fits."""
