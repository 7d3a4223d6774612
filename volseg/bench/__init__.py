"""Benchmarks run as ``python -m volseg.bench <subcommand>``; one module per subcommand."""
