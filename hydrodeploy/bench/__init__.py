"""Benchmarking: closed-loop client processes, HdrHistogram latencies, windows, sweeps and
saturation detection."""
