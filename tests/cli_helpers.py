"""Running the command line in-process in tests, capturing what it prints and logs."""

import contextlib
import io
import logging

from finetune.cli import main


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main(argv): (exit status, printed output, progress log of the finetune logger)."""
    logger, printed, log = logging.getLogger("finetune"), io.StringIO(), io.StringIO()
    handler, level = logging.StreamHandler(log), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(printed):
            code = main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return code, printed.getvalue(), log.getvalue()
