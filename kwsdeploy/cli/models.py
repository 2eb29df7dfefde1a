"""`kwsdeploy models`: the registry as a table (or JSON), with measured parameter counts."""

from __future__ import annotations

import json

import typer


def model_rows(measure: bool = True) -> list[dict]:
    """One row per registry card: expected and measured parameters, MACs, streaming mode."""
    import torch

    from kwsdeploy.models import registry
    from kwsdeploy.models.macs import macs_per_clip
    from kwsdeploy.streaming.costs import step_costs

    torch.set_num_threads(1)  # tiny forwards: more threads only thrash on a busy machine
    rows = []
    for card in registry.list_cards():
        row = {
            "name": card.name,
            "family": card.family,
            "aliases": list(card.aliases),
            "n_mfcc": card.n_mfcc,
            "params_expected": card.expected_params,
            "streaming": card.streaming,
            "reference": card.reference,
            "reference_name": card.reference_name,
            "notes": card.notes,
        }
        if measure:
            model = card.build(num_classes=12)
            row["params"] = registry.count_params(model)
            row["macs_per_clip"] = macs_per_clip(model, card.n_mfcc)
            row.update(step_costs(card, model))
        rows.append(row)
    return rows


def _fmt_int(n) -> str:
    """A count as '1.52 M' / '65.1 K' / '980', or '-' when unknown."""
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(n)


def register(app: typer.Typer) -> None:
    """Add `models` (the zoo table) to the CLI."""

    @app.command("models")
    def models_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """List the model zoo: name, family, parameters, MACs per 1 s clip, streaming mode, reference."""
        rows = model_rows()
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        from rich.table import Table

        from kwsdeploy.cli.common import console

        table = Table(title="kwsdeploy model zoo (12 classes; MACs per 100 ms hop: step form vs recomputing 1 s)")
        cols = ("name", "family", "params", "MACs / 1 s clip", "MACs / hop", "step / window", "streaming", "reference name")
        for col in cols:
            table.add_column(col, justify="right" if col.startswith(("params", "MACs", "step")) else "left", no_wrap=True)
        for r in rows:
            params = f"{r['params']:,}"
            if r["params_expected"] is not None and r["params_expected"] != r["params"]:
                params += f" (expected {r['params_expected']:,})"
            ratio = r.get("step_vs_window_ratio")
            table.add_row(
                r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else ""),
                r["family"],
                params,
                _fmt_int(r.get("macs_per_clip")),
                _fmt_int(r.get("macs_per_hop")),
                "-" if ratio is None else f"{ratio:.3f}",
                r["streaming"],
                r["reference_name"] or "(kwsdeploy)",
            )
        con = console()
        con.width = max(con.width, 150)
        con.print(table)
