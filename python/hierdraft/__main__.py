"""`python -m hierdraft`: the same command line as the `hierdraft` console script."""

from hierdraft.cli import main

raise SystemExit(main())
