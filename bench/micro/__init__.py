"""pytest-benchmark micro-benchmarks of the pieces of one training step: pytest -q bench/micro."""
