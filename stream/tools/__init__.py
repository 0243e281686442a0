"""Tools around the service, reached only through the CLI: generate, replay, demo, bench, evaluate
and its report, and the local servers they start."""
