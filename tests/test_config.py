from pathlib import Path

import pytest

from llmos.config import load_settings, parse_size
from llmos.errors import ConfigError, ExitCode


def test_defaults_live_in_home(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'llmos.db'}"
    assert s.host == "127.0.0.1"
    assert s.memory_budget > 0
    assert s.blobs_dir == tmp_path / "blobs"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LLMOS_PORT", "9999")
    monkeypatch.setenv("LLMOS_MEMORY_BUDGET", "2GiB")
    s = load_settings()
    assert (s.home, s.port, s.memory_budget) == (tmp_path, 9999, 2 * 1024**3)


@pytest.mark.parametrize("var,value,needle", [
    ("LLMOS_PORT", "abc", "LLMOS_PORT"),
    ("LLMOS_PORT", "70000", "LLMOS_PORT"),
    ("LLMOS_MEMORY_BUDGET", "lots", "LLMOS_MEMORY_BUDGET"),
    ("LLMOS_DATABASE_URL", "not a url", "LLMOS_DATABASE_URL"),
    ("LLMOS_POLICY", "random", "LLMOS_POLICY"),
    ("LLMOS_NO_SUCH_SETTING", "1", "NO_SUCH_SETTING"),
])
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert needle in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text,expected", [("1024", 1024), ("1KiB", 1024), ("1.5GB", 1_500_000_000),
                                           ("512 MiB", 512 * 1024**2), (7, 7)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected
