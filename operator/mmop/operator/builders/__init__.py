"""Pure builders: (MultimodalModel spec + status) in, manifest dicts out. No I/O, no kopf."""
