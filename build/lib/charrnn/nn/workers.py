"""Which worker of a multi-worker cluster this process is, from TF_CONFIG, without TensorFlow
(the train stage asks before it loads TensorFlow)."""
from __future__ import annotations

import json
import os


def is_chief() -> bool:
    """True outside a cluster, and on the chief (or worker 0) inside one."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0)
