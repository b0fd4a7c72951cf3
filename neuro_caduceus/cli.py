"""The `neuro-caduceus` command line: each area registers its own commands; heavy imports stay lazy."""

from __future__ import annotations

import typer

from neuro_caduceus.analysis import commands as analysis_commands
from neuro_caduceus.cohort import commands as cohort_commands
from neuro_caduceus.genome import commands as genome_commands
from neuro_caduceus.model import commands as model_commands
from neuro_caduceus.stats import commands as stats_commands
from neuro_caduceus.variants import commands as variants_commands

app = typer.Typer(
    name="neuro-caduceus",
    help="Gene-level Caduceus DNA-language-model embeddings from biobank exomes, at cohort scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

for area in (
    model_commands,
    genome_commands,
    variants_commands,
    cohort_commands,
    stats_commands,
    analysis_commands,
):
    area.register(app)

if __name__ == "__main__":
    app()
