import sys

from visual_words.commands.main import main

sys.exit(main())
