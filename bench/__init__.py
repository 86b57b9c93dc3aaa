"""``make bench``: the fleet's benchmarks against the raw broker and Redis ceilings."""
