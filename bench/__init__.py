"""The benchmark suite (`make bench`); bench/run.py is its command line."""
