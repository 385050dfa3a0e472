import os

# Quiet TensorFlow's C++ logging and keep tests on the CPU, before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("CHARRNN_TRACKING", "0")  # tests that want MLflow turn it on explicitly
