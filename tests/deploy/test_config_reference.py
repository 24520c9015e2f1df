"""docs/deployment.md and .env.example list every setting of app/config.py, as generated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import config_reference  # noqa: E402


@pytest.mark.parametrize("path", [ROOT / "docs" / "deployment.md", ROOT / ".env.example"], ids=lambda p: p.name)
def test_every_setting_is_documented(path):
    text = path.read_text()
    missing = [f"SVP_{name.upper()}" for name in Settings.model_fields if f"SVP_{name.upper()}" not in text]
    assert not missing, f"{path.name} does not mention {missing}; run python scripts/config_reference.py"


def test_generated_blocks_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_table_has_one_row_per_setting_with_its_default_and_description():
    rows = {row[0]: row for row in config_reference.settings_rows()}
    assert list(rows) == [f"SVP_{name.upper()}" for name in Settings.model_fields]
    assert rows["SVP_GPU_QUEUE"][1:3] == ("string", "gpu")
    assert rows["SVP_DATABASE_URL"][1:3] == ("string (optional)", "")
    assert rows["SVP_LOG_FORMAT"][1:3] == ("text \\| json", "text")
    for variable, _, _, description in rows.values():
        assert description, f"{variable} has no description in app/config.py"
    block = config_reference.doc_block()
    for variable in rows:
        assert block.count(f"| `{variable}` |") == 1
    # .env.example: every setting commented out at its default, so the code stays the source of defaults.
    env = config_reference.env_block()
    assert "# SVP_GPU_QUEUE=gpu" in env and "# SVP_DATABASE_URL=" in env


def test_check_mode_notices_a_stale_block(tmp_path, monkeypatch):
    stale = tmp_path / "deployment.md"
    stale.write_text(f"intro\n{config_reference.DOC_BEGIN}\n| old |\n{config_reference.DOC_END}\noutro\n")
    env = tmp_path / ".env.example"
    env.write_text(f"{config_reference.ENV_BEGIN}\n{config_reference.ENV_END}\n")
    monkeypatch.setattr(config_reference, "DOC_PATH", stale)
    monkeypatch.setattr(config_reference, "ENV_PATH", env)
    monkeypatch.setattr(config_reference, "ROOT", tmp_path)
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main([]) == 0
    assert config_reference.main(["--check"]) == 0
    text = stale.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "| old |" not in text
    assert "SVP_LOG_FORMAT" in text and "SVP_LOG_FORMAT" in env.read_text()
