"""The network and its life: the architecture and its model directory, the fused CPU GRU, the
adaptive softmax, training with its recipe, checkpoints and distribution, memory estimates, and
held-out evaluation."""
