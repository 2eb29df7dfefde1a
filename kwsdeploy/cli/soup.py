"""`kwsdeploy soup`: average checkpoints of one model into one (a model soup, `kwsdeploy.train.soup`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli.common import user_errors


def register(app: typer.Typer) -> None:
    """Add `soup` to the CLI."""

    @app.command("soup")
    def soup_cmd(
        checkpoints: list[Path] = typer.Argument(..., help="Two or more checkpoints of one model (same labels and features)."),
        out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
        greedy: bool = typer.Option(False, "--greedy", help="Keep an ingredient only if it does not lower the "
                                                            "--data/--split accuracy (default: average all)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared directory scoring the soup (needed with --greedy)."),
        split: str = typer.Option("valid", "--split", help="Split that scores it: valid (never the test speaker's split)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already at --out."),
        batch_size: int = typer.Option(256, "--batch-size", min=1, max=65_536),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Average the weights of fine-tunes of one model: one checkpoint, same cost, usually better on new speakers."""
        from kwsdeploy.train.soup import soup_checkpoints

        with user_errors():
            s = soup_checkpoints(checkpoints, out, greedy, data, split, overwrite, batch_size)
            if as_json:
                typer.echo(json.dumps(s, indent=1))
                return
            scores = [v for v in s["ingredient_scores"].values() if v is not None]
            score_txt = (f"; {s['split']} accuracy {s['score'] * 100:.2f} % (best ingredient {max(scores) * 100:.2f} %)"
                         if s["score"] is not None else "")
            typer.echo(f"soup of {len(s['kept'])}/{len(s['ingredient_scores'])} checkpoints ({', '.join(s['kept'])})"
                       f"{score_txt} -> {s['out']}")
