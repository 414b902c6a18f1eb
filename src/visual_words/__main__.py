import sys

from visual_words.cli import main

sys.exit(main())
