"""The cost plan of a run, before it runs: grid, worst-case gradient evaluations, FLOPs, memory, hours."""
