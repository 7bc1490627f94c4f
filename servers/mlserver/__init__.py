"""MLServer (Seldon, Apache 2.0) serving the CIFAR-10 ResNets over the Open Inference Protocol.

``runtime.Cifar10Runtime`` is MLServer's custom runtime: one instance per model version, each a
checkpoint. ``stack/mlserver`` writes the model repository and starts ``mlserver start``;
``docker/mlserver`` is the same server as an image.
"""
