"""Benchmarks run as ``volseg bench <subcommand>``; one module per subcommand."""
