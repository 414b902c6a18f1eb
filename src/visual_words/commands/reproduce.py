"""`vw reproduce`: run the whole study for a profile, every stage in order.

First the checks that need no stage: the model lock, the projected cost, and the study's datasets, which are
fetched here when missing (`prepare.fetch`; data/preflight.py) or named in one line with the command to run.
In a git checkout whose params.yaml names the same profile, this is `dvc repro` (cached, incremental: a second run
does nothing). Elsewhere (another profile, or the container's workspace without git) the same stage commands run
in order directly, without DVC's cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from visual_words.commands import add_config_args, config_from_args
from visual_words.stages import STAGES


def _dvc_usable(root: Path) -> bool:
    dvc = Path(sys.executable).parent / "dvc"
    return (root / ".git").exists() and (root / "dvc.yaml").exists() and (dvc.exists() or shutil.which("dvc"))


def cmd_reproduce(args) -> int:
    import yaml

    cfg = config_from_args(args)
    root = Path(cfg.root)
    file_profile = yaml.safe_load(Path(cfg.source).read_text()).get("profile")
    t0 = time.time()
    from visual_words.models.lock_check import MODELS_CHECKED_ENV, check_models_for_config

    check_models_for_config(cfg)  # the real checkpoints match the model lock (a no-op for local/tiny models)
    from visual_words.commands.plan import check_budget

    if check_budget(cfg, args):  # the projection first; above sweep.confirm_above_gpu_hours it asks (or --yes)
        return 2
    from visual_words.data.preflight import ensure_datasets

    # the datasets before any stage: fetched (prepare.fetch, checked) or one line naming the command to run
    ensure_datasets(cfg)
    # agreed once: the sweep stage (in this process or under dvc) neither prints the plan again nor asks again;
    # hashed once: each stage re-checks the weights' presence and sizes, not every byte
    saved = {k: os.environ.get(k) for k in ("VW_YES", "VW_PLAN_SHOWN", MODELS_CHECKED_ENV)}
    os.environ.update({"VW_YES": "1", "VW_PLAN_SHOWN": "1", MODELS_CHECKED_ENV: "1"})
    try:
        return _run(cfg, args, root, file_profile, t0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(cfg, args, root: Path, file_profile, t0: float) -> int:
    if not args.no_dvc and cfg.profile == file_profile and not args.overrides and _dvc_usable(root):
        dvc = Path(sys.executable).parent / "dvc"
        print(f"[reproduce] profile {cfg.profile}: dvc repro (incremental; stages that did not change are skipped)",
              flush=True)
        # dvc.yaml's stage commands call `vw`: put this interpreter's bin folder (the venv) first on PATH.
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        rc = subprocess.call([str(dvc) if dvc.exists() else "dvc", "repro"], cwd=root, env=env)
        if rc:
            return rc
    else:
        from visual_words.commands.main import main

        extra = ["--profile", cfg.profile, "--params", cfg.source] + sum((["--set", o] for o in args.overrides), [])
        for name, argv in ((s.name, list(s.command)) for s in STAGES):
            print(f"[reproduce] stage {name}: vw {' '.join(argv)}", flush=True)
            t_stage = time.time()
            rc = main([*argv, *extra])
            if rc:
                print(f"[reproduce] stage {name} failed (exit {rc}); re-run to resume", file=sys.stderr)
                return rc
            print(f"[reproduce] stage {name} done in {time.time() - t_stage:.0f} s", flush=True)
    report = cfg.path(cfg.report.out_dir) / cfg.profile / "index.html"
    print(f"[reproduce] done in {time.time() - t0:.0f} s")
    print(f"[reproduce] report: {report}")
    print("[reproduce] MLflow UI: `vw ui` (or `.venv/bin/vw ui`), then open the train experiment's link it prints")
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run every stage of the study for a profile (default: smoke)",
                       description="Runs the study end to end: prepare → maps → train (sweep) → evaluate → analyze "
                       "→ report. First it checks the model lock, prints the projected cost, and fetches the study's "
                       "missing datasets (checked against registry/datasets.yaml; prepare.fetch: false = stop and name "
                       "the command instead). In a git checkout with the params file's own profile the stages run "
                       "as `dvc repro`.")
    add_config_args(p)
    p.add_argument("--no-dvc", action="store_true", help="run the stages directly, without DVC")
    from visual_words.commands.plan import add_plan_args

    add_plan_args(p)
    p.add_argument("--yes", action="store_true", help="run even when the projection exceeds "
                   "sweep.confirm_above_gpu_hours (without a terminal it refuses otherwise)")
    p.set_defaults(func=cmd_reproduce)
