"""`python -m scbundle.cli`: the `scbundle` command."""

from scbundle.cli import main

main()
