"""The training wing: datasets and models by name, and fitting. TensorFlow is imported inside functions only."""
