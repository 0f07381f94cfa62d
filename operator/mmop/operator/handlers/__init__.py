"""kopf handler bodies, one module per trigger; main.py only holds the decorators."""
