"""Training data from recording stores: samples, leakage-safe splits, normalisation."""
