"""The ``fiber-fast`` dispatcher: every subcommand listed, only the chosen one imported, launcher arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fiber_fast import cli


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("data", "train", "eval", "oscar", "demo", "bench"):
        assert name in out


@pytest.mark.parametrize("command", [command.names for command in cli.SUBCOMMANDS])
def test_every_subcommand_has_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: fiber-fast " + " ".join(command) in capsys.readouterr().out


def test_help_imports_no_subcommand_module() -> None:
    code = ("import sys\nfrom fiber_fast import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('deepspeed', 'transformers', 'timm', 'fiber_fast.train', 'fiber_fast.models') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_chosen_skips_launcher_options() -> None:
    assert cli._chosen(["--local_rank=1", "train", "--stage", "coarse"]) == ("train",)
    assert cli._chosen(["data", "synth", "--out", "x"]) == ("data", "synth")
    assert cli._chosen(["oscar", "extract", "--model", "run"]) == ("oscar", "extract")
    assert cli._chosen(["data"]) == ()
    assert cli._chosen(["nonsense"]) == ()


def test_unknown_subcommand_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "fiber_fast", "--local_rank=0", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "train" in done.stdout
