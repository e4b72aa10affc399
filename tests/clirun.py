"""Running the CLI inside the test process: exit code, stdout and stderr of `main(args)`."""

from __future__ import annotations

import pytest

from midillm_lite.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err
