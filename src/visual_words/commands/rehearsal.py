"""What a rehearsal measured, and what it projects for the paper profile (benchmarks/gpu_rehearsal.sh prints it).

A rehearsal runs the paper's models at full size on a few trials. Its SD trials train one trial per batched step at
the paper's batch and resolution, exactly as the paper profile does, so their sidecars' wall spans give the SD
training step's rate on this card. `measured_rates` reads it; `write_measured` files it with `plan.add_measured_rates`
under the card's name (in a copy of the rates file, so the packaged one changes only when someone commits it);
`stage_lines` joins each rehearsal stage's time with the paper profile's projected GPU-hours for the same stage
(`plan.plan_for`), one line per stage, with the basis of each projection.

    python -m visual_words.commands.rehearsal --profile rehearsal --set … --times prepare=12.3 … [--rates FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visual_words.provenance import read_times
from visual_words.trials import embedding_path, trial_grid


def measured_rates(cfg) -> dict[str, float]:
    """Rates this rehearsal measured: the SD training step (s per step of one trial at `train.batch_size`), the
    mean over its generation trials of the wall span the trainer recorded, divided by the steps."""
    spans = []
    for t in trial_grid(cfg):
        if t.task != "generation":
            continue
        sidecar = Path(str(embedding_path(cfg, t)) + ".json")
        if not sidecar.is_file():
            continue
        meta = json.loads(sidecar.read_text()) | read_times(sidecar)  # the span is kept beside the sidecar
        if meta.get("trials_in_batch") == 1 and meta.get("steps") and meta.get("finished_ms"):
            spans.append((meta["finished_ms"] - meta["started_ms"]) / 1000 / meta["steps"])
    return {"sd_train_step_s": sum(spans) / len(spans)} if spans else {}


def write_measured(cfg, card: str, rates_file: Path) -> dict[str, float]:
    """File this rehearsal's rates for `card` into `rates_file` (created from the packaged rates file if absent)."""
    from visual_words.plan import add_measured_rates

    rates = measured_rates(cfg)
    if not rates:
        return {}
    basis = (f"benchmarks/gpu_rehearsal.sh: full-size SD-2.1 stand-in, batch {cfg.train.batch_size}, "
             f"{cfg.train.precision}, {cfg.train.steps} steps per trial incl. warm-up (random weights)")
    add_measured_rates(card, rates, basis=basis, path=rates_file)
    return rates


def stage_lines(times: dict[str, float], paper_cfg, card: str, rates_file: Path | None) -> list[str]:
    """One line per rehearsal stage: its time here and the paper profile's projected GPU-hours for that stage."""
    from visual_words.plan import plan_for

    plan = plan_for(paper_cfg, card=card, rates_file=rates_file)
    hours: dict[tuple[str, str], float] = {}
    basis: dict[str, list[str]] = {}
    for row in plan.rows:
        stage = row.stage.split(" ")[0]
        hours[(stage, row.device)] = hours.get((stage, row.device), 0.0) + row.seconds / 3600
        basis.setdefault(stage, []).append(f"{row.stage}: {row.basis}")
    lines = []
    for stage, seconds in times.items():
        # plan rows are named "<stage>" or "<stage> (<task>)": a rehearsal stage has the rows of its name
        cost = [f"{hours[(stage, d)]:,.2f} {d.upper()}-hours" for d in ("gpu", "cpu") if (stage, d) in hours]
        tail = (f"paper profile on one {card}: {' + '.join(cost)} ({'; '.join(basis[stage])})"
                if cost else "not part of a paper run")
        lines.append(f"[gpu-rehearsal] {stage:<9} {seconds:8.1f} s here | {tail}")
    lines.append(f"[gpu-rehearsal] paper profile in all: {plan.gpu_hours:,.1f} GPU-hours on one {card} "
                 f"(rates: {plan.rates_source})")
    return lines


def main(argv: list[str] | None = None) -> int:
    from visual_words.commands import add_config_args, config_from_args
    from visual_words.config import load_config
    from visual_words.plan import DEFAULT_CARD, detect_card

    p = argparse.ArgumentParser(prog="python -m visual_words.commands.rehearsal",
                                description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument("--times", nargs="+", default=[], metavar="STAGE=SECONDS", help="each stage's wall time here")
    p.add_argument("--rates", help="rates file to file this card's measurement in (default: a copy under "
                   "artifacts/rehearsal/)")
    p.add_argument("--card", help="the card's name in the rates file (default: detected, else h100)")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    card = args.card or detect_card() or DEFAULT_CARD
    rates_file = Path(args.rates) if args.rates else cfg.path("artifacts/rehearsal/rates.yaml")
    rates = write_measured(cfg, card, rates_file) if detect_card() or args.card else {}
    for k, v in rates.items():
        print(f"[gpu-rehearsal] measured {k} = {v:.4f} on {card} -> {rates_file}")
    times = {k: float(v) for k, v in (t.split("=", 1) for t in args.times)}
    paper = load_config("paper", cfg.source)
    for line in stage_lines(times, paper, card, rates_file if rates_file.is_file() else None):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
