"""Running the command line in tests: in this process (`run_main`, `in_process_error`), as a user
would in a subprocess (`run_cli`, `one_line_error`), and what a folder held (`snapshot`)."""

import contextlib
import io
import logging
import os
import subprocess
import sys

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


def in_process_error(capsys, *argv) -> str:
    """main(argv) expecting a user's mistake: exit status 2, one line `error: ...`; returns it."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def run_cli(*args, cwd=None, **env) -> subprocess.CompletedProcess:
    """`python -m finetune *args` in a subprocess, with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "finetune", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, **env},
    )


def one_line_error(*args, **env) -> str:
    """Run the command line expecting exit status 2 and a single `error: ...` line; return it."""
    result = run_cli(*args, **env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def snapshot(folder) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its modification time and size."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
