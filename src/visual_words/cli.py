"""The installed `vw` entry point (pyproject's [project.scripts]); the parser and `main` live in
visual_words.commands.main. Layer: the top; nothing imports it."""

from __future__ import annotations

import sys

from visual_words.commands.main import main

if __name__ == "__main__":
    sys.exit(main())
