"""The README's Snakemake commands mean what the README says they do.

Each ``snakemake`` line of the README's shell blocks is parsed with Snakemake's own argument
parser: options that take several values (``--configfile``, ``-R``) swallow a target written
after them, which turns "rerun one tile of the state" into "rerun the default target".
The tiles the README names are tiles of their region.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser

from mapper.config import load_config, load_region

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_commands() -> list[str]:
    """The ``snakemake`` commands of the README's ``bash`` blocks (a line ending in ``\\``
    joined with the next), comments removed."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split("  #")[0].strip() for line in joined.splitlines()
                     if line.startswith("snakemake ")]
    return commands


COMMANDS = shell_commands()


def test_the_readme_has_its_snakemake_commands():
    assert len(COMMANDS) >= 10
    assert any("-R" in c.split() for c in COMMANDS)
    assert any("--configfile" in c.split() for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_keeps_its_targets(command):
    args = get_argument_parser().parse_args(shlex.split(command, comments=True)[1:])
    if args.unlock:
        return
    assert args.targets, f"{command!r}: no target left; put targets before -R and --configfile"
    for path in args.configfile or []:
        assert Path(path).suffix in (".yaml", ".yml"), f"{command!r}: {path} read as a config file"
    for path in args.forcerun or []:
        assert path.startswith(("results/", "resources/")), f"{command!r}: {path} forced to rerun"


def test_the_tiles_the_readme_names_are_tiles_of_their_region():
    named = set(re.findall(r"results/(\w+)/stack/(R\d{4}C\d{4})\.tif", README.read_text()))
    assert named
    config = load_config(ROOT / "config" / "config.yaml")
    for region_name in {region for region, _ in named}:
        stacked = set(load_region(config, region_name).stacked_tiles())
        missing = {tile for region, tile in named if region == region_name} - stacked
        assert not missing, f"README names tiles {sorted(missing)} that {region_name} does not have"
