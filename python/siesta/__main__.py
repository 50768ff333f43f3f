"""``python -m siesta``: the same as the ``siesta`` command."""

from siesta.cli import main

if __name__ == "__main__":
    main()
