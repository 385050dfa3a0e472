"""The plumbing every other package stands on: params (the one reader of params.yaml), paths,
atomic files, the one error base class, masking, quiet TensorFlow, and how a stage or command
ends. Nothing here imports TensorFlow or MLflow."""
