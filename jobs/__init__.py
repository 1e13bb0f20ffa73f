"""jobctl's training side: what runs inside the training container."""

import os

# TensorFlow's C++ start-up chatter (oneDNN notices, "failed call to cuInit" on CPU nodes) buries the epoch lines.
# setdefault: a user who wants it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
