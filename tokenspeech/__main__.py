import sys

from tokenspeech.cli import main

sys.exit(main())
