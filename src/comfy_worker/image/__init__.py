"""Building the worker image: custom node snapshots, network volume mapping, build-time smoke test."""
