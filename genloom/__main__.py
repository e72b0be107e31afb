"""`python -m genloom ...` is the `genloom` command."""

from genloom.cli import main

if __name__ == "__main__":
    main()
