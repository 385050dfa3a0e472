"""Text from a trained model: the sampling settings every door takes, the compiled generator and
its SavedModel, and the copy metrics of what it wrote."""
