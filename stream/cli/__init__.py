"""The `segstream` command: the entry point and the table of subcommands."""
