"""Benchmarks: training steps/s by process count against the textbook loop, MFU, generation tokens/s.

python -m bench --help; the micro-benchmarks are in bench/micro (pytest -q bench/micro).
"""
