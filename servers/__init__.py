"""Model servers other than TorchServe, serving the same checkpoints with handlers/' preprocessing."""
