"""`python -m finetune`: see finetune/cli.py."""

import sys

from finetune.cli import main

sys.exit(main())
