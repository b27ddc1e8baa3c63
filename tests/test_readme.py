"""The README's worked examples and the figures it quotes, run against today's code so the
README cannot drift (issue 17): every fast command of its code blocks (`privtool epsilon`,
`privtool data list`) runs and exits 0, every ε the README quotes next to a `privtool epsilon`
command is what that command prints, and the stated defaults are the code's."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from privtool.cli import app
from privtool.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
runner = CliRunner()
SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
FAST = ("privtool epsilon ", "privtool data list")


def code_commands():
    """Every `privtool …` line of the README's bash blocks (continuations joined)."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("privtool "):
                cmds.append(line)
    return cmds


def run(cmd):
    args = shlex.split(cmd)[1:]
    return runner.invoke(app, args)


def quoted_number(text):
    """'9.6·10⁵' -> 960000.0; '7.33' -> 7.33."""
    m = re.fullmatch(r"([\d.,]+)(?:·10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+))?", text)
    assert m, text
    value = float(m.group(1).replace(",", ""))
    return value * 10 ** int(m.group(2).translate(SUPERSCRIPT)) if m.group(2) else value


FAST_COMMANDS = [c for c in code_commands() if c.startswith(FAST)]


def test_the_readme_has_fast_worked_examples():
    assert len(FAST_COMMANDS) >= 5


@pytest.mark.parametrize("cmd", FAST_COMMANDS)
def test_every_fast_worked_example_runs(cmd):
    res = run(cmd)
    assert res.exit_code == 0, (cmd, res.output)
    if "--json" in cmd:
        json.loads(res.stdout)


# "ε ≈ FIGURE at δ = …, from `privtool epsilon …`": the figure next to the command
QUOTED_EPSILON = re.compile(
    r"ε ≈ ([\d.,]+(?:·10[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)?) at δ = [^,]*,\s*from\s*"
    r"`(privtool epsilon [^`]+)`",
    flags=re.S,
)


def test_quoted_epsilons_are_what_the_command_prints():
    found = QUOTED_EPSILON.findall(README)
    assert found, "the README quotes no ε next to its command"
    for figure, cmd in found:
        cmd = " ".join(cmd.split())
        res = run(cmd + " --json")
        assert res.exit_code == 0, (cmd, res.output)
        got = json.loads(res.stdout)["epsilon"]
        want = quoted_number(figure)
        digits = len(figure.split("·")[0].replace(".", "").lstrip("0"))
        assert got == pytest.approx(want, rel=0.5 * 10 ** (1 - digits)), (cmd, got, figure)


def test_stated_grad_sample_mode_default_is_the_codes():
    stated = re.findall(r"`train\.grad_sample_mode: (\w+)` \(the default", README)
    assert stated, "the README states no grad_sample_mode default"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["grad_sample_mode"]
    for mode in stated:
        assert mode == TrainConfig().grad_sample_mode == params
    assert "ghost clipping by default" not in README
