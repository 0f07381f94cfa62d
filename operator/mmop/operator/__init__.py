"""mmop.operator: the kopf controller that turns MultimodalModel objects into serving workloads.

Importing this package does not import kopf; only ``main`` (the handlers) does.
"""
