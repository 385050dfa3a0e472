"""From a source to training data: the corpus, its vocabulary, the train/held-out split, and the
records (written without TensorFlow, read with tf.data)."""
