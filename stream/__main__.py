"""`python -m stream` is the `segstream` command."""

from stream.cli.main import main

raise SystemExit(main())
