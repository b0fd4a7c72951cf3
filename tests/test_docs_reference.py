"""The generated reference pages (config keys, CLI options) match the code, so they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from neuro_caduceus import docs_reference
from neuro_caduceus.cohort.config import CohortConfig

ROOT = Path(__file__).parents[1]


def test_committed_reference_pages_equal_the_generated_ones():
    stale = docs_reference.stale_pages(ROOT)
    assert not stale, f"{stale} are stale: run python -m neuro_caduceus.docs_reference --write and commit"


def test_check_mode_fails_on_a_stale_page_and_write_repairs_it(tmp_path):
    assert docs_reference.main(["--write", "--root", str(tmp_path)]) == 0
    assert docs_reference.main(["--check", "--root", str(tmp_path)]) == 0
    page = tmp_path / "docs/reference/cli.md"
    page.write_text(page.read_text().replace("--n-components", "--n-comps"))
    assert docs_reference.main(["--check", "--root", str(tmp_path)]) == 1


def _config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _config_keys(field.annotation, f"{prefix}{name}.")
    return keys


def test_every_config_key_and_every_command_option_is_in_the_pages():
    config, cli = docs_reference.render_config(), docs_reference.render_cli()
    keys = _config_keys(CohortConfig)
    assert len(keys) > 30  # the walk reached the nested sections
    missing = [k for k in keys if f"| `{k}` |" not in config]
    assert not missing, missing
    group = docs_reference.commands()
    options = [(name, opt) for name, cmd in group.commands.items() for p in cmd.params for opt in p.opts
               if opt.startswith("--") and opt != "--help"]
    assert len(options) > 50
    sections = {part.split("\n")[0]: part for part in cli.split("\n## ")[1:]}
    absent = [(name, opt) for name, opt in options if f"`{opt}`" not in sections[name]]
    assert not absent, absent


def test_a_config_field_without_a_description_is_refused():
    class Section(BaseModel):
        documented: int = Field(1, description="has one")
        bare: int = 2

    with pytest.raises(docs_reference.MissingDescription, match=r"Section\.bare"):
        list(docs_reference.model_tables(Section))
