"""The CLI's outer boundary: --help, --version, and errors as one line with a non-zero exit."""

import subprocess
import sys

import pytest

from midillm_lite import __version__


def _run(*args):
    return subprocess.run([sys.executable, "-m", "midillm_lite", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands():
    out = _run("--help")
    assert out.returncode == 0
    for verb in ("encode", "decode"):
        assert verb in out.stdout


def test_version():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"midillm-lite {__version__}"


def test_unknown_command_is_a_usage_error_without_traceback():
    out = _run("no-such-verb")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "no-such-verb" in out.stderr


def test_interrupt_while_python_imports_the_cli_says_so(monkeypatch, capsys):
    # Issue 14: a Ctrl-C during start-up exited 130 without a word.
    import sys

    from midillm_lite import __main__

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "midillm_lite.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "midillm_lite.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_info:
        __main__.run()
    assert exit_info.value.code == 130 and capsys.readouterr().err == "interrupted\n"
