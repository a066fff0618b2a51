"""Building the worker image: custom node snapshots, model folder list, smoke test, RunPod Hub files.

Runs at build time (and in the rehearsal of the image), never in a running worker; it uses the worker's
settings, errors and models packages, which the Dockerfile copies before it.
"""
