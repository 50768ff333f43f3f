"""Every option in the settings table is documented: in README.md and in `siesta --help`.

The long flags come from `siesta.config.SETTINGS` (the single definition of the
options), so a new setting without documentation fails here.
"""

import re
from pathlib import Path

import pytest
from siesta.config import SETTINGS
from siesta_process import run_siesta

README = Path(__file__).resolve().parent.parent / "README.md"
LONG_FLAGS = sorted({flag for s in SETTINGS for flag in s.flags if flag.startswith("--")})


def mentions(text, flag):
    """`flag` appears as a whole flag (not inside a longer one such as --x-flag)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def help_text():
    result = run_siesta("--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_settings_have_long_flags():
    assert LONG_FLAGS, "no settings found"
    assert all(any(f.startswith("--") for f in s.flags) for s in SETTINGS)


@pytest.mark.parametrize("flag", LONG_FLAGS)
def test_flag_in_readme(flag):
    assert mentions(README.read_text("utf-8"), flag), f"{flag} is not in README.md"


@pytest.mark.parametrize("flag", LONG_FLAGS)
def test_flag_in_help(help_text, flag):
    assert mentions(help_text, flag), f"{flag} is not in siesta --help"


def test_readme_table_is_current():
    """README's options table is exactly what the settings table generates (no drift)."""
    from siesta.config import markdown_table

    assert markdown_table() in README.read_text("utf-8"), (
        "README.md's options table is stale: paste `python -m siesta.config` into it"
    )
