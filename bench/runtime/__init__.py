"""The runtime benchmark: mmop-runtime next to the in-process limit, LitServe and a naive server.

``python -m bench.runtime [--quick]`` measures, in one run on the same model files and inputs,
the raw in-process throughput (decode + preprocess + forward at the max batch size), a real
``mmop-runtime`` process, a LitServe server and a naive one-request-one-forward FastAPI server
at several concurrencies, and writes ``bench/results/runtime-*.json``.
"""
