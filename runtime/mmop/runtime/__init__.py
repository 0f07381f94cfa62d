"""mmop.runtime: the model server (Open Inference Protocol v2, dynamic batching, metrics)."""
