"""MLflow, behind one boundary: nothing outside this package imports mlflow, and nothing outside
it reaches past these names. Runs and their look-ups (runs, lookup), the MLflow Model and the
registry (registry, pyfunc_model), a fine-tuning's parent model (parents), what a run is given of
the outputs (publishing, provenance), and the `charrnn runs` table (table). mlflow itself is imported only when a store is used."""
from charrnn.tracking.lookup import model_record
from charrnn.tracking.parents import resolved as resolved_parent
from charrnn.tracking.parents import tags as parent_tags
from charrnn.tracking.publishing import publish, publish_training
from charrnn.tracking.registry import HELD_OUT_BPC_TAG, RegistryError, fetch, promote
from charrnn.tracking.runs import MODEL_HASH_TAG, TrackingError, is_enabled, model_run, search_runs, train_run
from charrnn.tracking.table import table as runs_table
from charrnn.tracking.table import ui_links

__all__ = ["HELD_OUT_BPC_TAG", "MODEL_HASH_TAG", "RegistryError", "TrackingError", "fetch", "is_enabled",
           "model_record", "model_run", "parent_tags", "promote", "publish", "publish_training", "resolved_parent", "runs_table",
           "search_runs", "train_run", "ui_links"]
