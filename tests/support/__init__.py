"""Shared test support (also used by bench/): runtime processes, polling with a deadline,
traffic, MultimodalModel manifests. Test modules import from here, never from a conftest."""
