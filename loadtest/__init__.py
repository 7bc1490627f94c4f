"""Load tests: producers 1..N against the running stack, latency percentiles, ceiling, plots."""
