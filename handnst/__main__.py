"""`python -m handnst` is the same as the `handnst` command."""
from handnst.cli import main

raise SystemExit(main())
