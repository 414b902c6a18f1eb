"""`vw bake-models`, `vw check-models`: pin the paper's real checkpoints (the image bakes them; see models/lock.py)."""

from __future__ import annotations

from visual_words.models.lock import LOCK_ENV, LOCK_NAME, REHEARSAL_ENV, add_hub_access_args


def _keys(args) -> list[str]:
    """The models to act on: the given keys, else the hub models of --profile (default: paper)."""
    if args.keys:
        return args.keys
    from visual_words.commands import config_from_args

    args.profile = args.profile or "paper"
    return list(config_from_args(args).study.models.values())


def cmd_bake_models(args) -> int:
    from visual_words.models.lock import bake, hub_entries

    keys = args.keys or [e.key for e in hub_entries()]
    bake(keys, args.cache, args.lock, fetch=not args.no_download, rehearsal=args.rehearsal,
         configs_only=args.configs_only, endpoint=args.endpoint, token_file=args.token_file)
    return 0


def cmd_check_models(args) -> int:
    from visual_words.models.lock_check import check_models

    checked = check_models(_keys(args), args.lock, args.cache, hashes=not args.no_hash,
                           accept_rehearsal=True if args.rehearsal else None)
    print(f"models as locked: {', '.join(checked)}" if checked else "no hub models to check (local checkpoints only)")
    return 0


def _common(p) -> None:
    p.add_argument("keys", nargs="*", help="registry keys (src/visual_words/registry/models.yaml)")
    p.add_argument("--cache", help="Hugging Face hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub)")
    p.add_argument("--lock", help=f"the lock file (default: ${LOCK_ENV}, else {LOCK_NAME} beside params.yaml)")


def register(sub) -> None:
    p = sub.add_parser(
        "bake-models", help="download the real checkpoints at their pinned commits and write the model lock",
        description="Downloads the files each hub model's loader reads, at the commit pinned in registry/models.yaml, "
        "into the Hugging Face cache, compares every file with the original publisher's sha256 and size "
        f"(registry/pins.yaml) and writes {LOCK_NAME} (repo id, commit, sha256 of every file) only if none differs. "
        "Needs the hub: run with HF_HUB_OFFLINE=0. A mirror of the hub: --endpoint or HF_ENDPOINT; a token for "
        "gated repos or the mirror: --token-file or HF_TOKEN_PATH (a file, so the token stays out of shell history "
        "and image layers). Default: every hub model in the registry. The image does this at build time with "
        "--build-arg BAKE_MODELS=1 (docs/models.md).")
    _common(p)
    add_hub_access_args(p)
    p.add_argument("--no-download", action="store_true",
                   help="do not download: lock the snapshots already in the cache (checked against the pins)")
    p.add_argument("--rehearsal", action="store_true",
                   help="with --no-download: lock a local rehearsal build (random weights at the registry's ids and "
                   f"commits) as origin `rehearsal`; checks accept it only with --rehearsal or {REHEARSAL_ENV}=1")
    p.add_argument("--configs-only", action="store_true",
                   help="download only configs and tokenizer (what a single-file SD checkpoint loads with); no lock")
    p.set_defaults(func=cmd_bake_models)
    p = sub.add_parser(
        "check-models", help="verify the pinned checkpoints against the model lock (offline)",
        description="Checks that every hub model of the profile (default: paper) is in the lock, in the cache at the "
        "locked commit, and that the files its loader reads are exactly the locked ones with the locked sha256. "
        "`vw reproduce` runs the same check before a run that uses hub models. Exit 2 with the list of differences.")
    _common(p)
    p.add_argument("--profile", help="take the models of this profile (default: paper)")
    p.add_argument("--params", help="params file (default: params.yaml in this folder or a parent)")
    p.add_argument("--no-hash", action="store_true", help="check presence, refs and sizes only (skip sha256)")
    p.add_argument("--rehearsal", action="store_true",
                   help=f"accept a lock of origin `rehearsal` (random weights); same as {REHEARSAL_ENV}=1")
    p.set_defaults(func=cmd_check_models, overrides=[])
