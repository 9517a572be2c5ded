"""The rows of :func:`~fedsim.downstream.compare.compare_initializations` as a console table and as
strict JSON."""

from __future__ import annotations

import math

from rich.table import Table

from fedsim.report import num, pm


def _fmt(v, pct: bool = True) -> str:
    return num(v, ".1f", scale=100.0 if pct else 1.0)


def _pm(mean, std, signed: bool = False) -> str:
    """``mean ± std`` in %; the ``±`` part only where there is a std."""
    return pm(mean, std, ".1f", scale=100.0, sign="+" if signed else "")


def downstream_table(rows: list[dict], title: str | None = None):
    """A rich table of :func:`compare_initializations` rows (scores in %, mean ± std over the
    fine-tune seeds; Δ = paired difference to random init, seed by seed)."""
    if rows:
        r0 = rows[0]
        seeds = ",".join(map(str, r0.get("seeds", [])))
        split = " — VALIDATION split" if r0.get("split") == "val" else ""
        title = title or (f"Downstream fine-tuning ({r0.get('domain', '')} domain{split}; mean ± std over "
                          f"fine-tune seeds {seeds}; Δ: paired difference to random init)")
    table = Table(title=title or "Downstream fine-tuning")
    table.add_column("initialization", style="bold", no_wrap=True)
    seg = any("dice" in r for r in rows)
    cls = any("accuracy" in r for r in rows)
    delta = any("dice_delta" in r or "accuracy_delta" in r for r in rows)
    if seg:
        table.add_column("Dice", justify="right")
        if delta:
            table.add_column("Δ Dice", justify="right")
        for col in ("Dice cath.", "Dice guide.", "mIoU", "Jaccard"):
            table.add_column(col, justify="right")
    if cls:
        table.add_column("tube acc.", justify="right")
        if delta:
            table.add_column("Δ tube acc.", justify="right")
    table.add_column("CPU s", justify="right")  # fine-tuning time summed over the seeds
    best_dice = max((r["dice"] for r in rows if seg and not math.isnan(r.get("dice", math.nan))), default=None)
    for r in rows:
        cells = [str(r["init"])]
        if seg:
            d = _pm(r.get("dice"), r.get("dice_std"))
            if best_dice is not None and r.get("dice") == best_dice and len(rows) > 1:
                d = f"[green]{d}[/green]"
            cells.append(d)
            if delta:
                cells.append(_pm(r.get("dice_delta"), r.get("dice_delta_std"), signed=True)
                             if not r.get("random_init") else "")
            cells += [_fmt(r.get("dice_catheter")), _fmt(r.get("dice_guidewire")), _fmt(r.get("miou")),
                      _fmt(r.get("jaccard"))]
        if cls:
            cells.append(_pm(r.get("accuracy"), r.get("accuracy_std")))
            if delta:
                cells.append(_pm(r.get("accuracy_delta"), r.get("accuracy_delta_std"), signed=True)
                             if not r.get("random_init") else "")
        cells.append(_fmt(r.get("seconds"), pct=False))
        table.add_row(*cells)
    return table


def _json_safe(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def rows_to_json(rows: list[dict]) -> list[dict]:
    """Rows with NaN replaced by None (strict JSON), also inside ``per_seed``."""
    return [_json_safe(r) for r in rows]


