"""Runnable examples: ``fastconv train-cnn`` (fastconv.examples.train_cnn)."""
