"""MLflow, behind one boundary: nothing outside this package imports mlflow. Runs and their
look-ups, the MLflow Model and the registry, what a run is given of the outputs, and the runs
table."""
