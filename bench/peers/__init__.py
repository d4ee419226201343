"""Naive peer servers that ``bench/bench_wrk.py`` compares ``mlinfer serve`` with (``bench.peers.naive``)."""
