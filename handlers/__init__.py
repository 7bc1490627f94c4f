"""The model side of the pipeline: the CIFAR-10 ResNet and its TorchServe handler."""
