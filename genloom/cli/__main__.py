"""`python -m genloom.cli ...` is the `genloom` command."""

from genloom.cli import main

main()
