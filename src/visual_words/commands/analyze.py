"""`vw analyze`: where the trained tokens land — ε-ball statistics, layer-wise t-SNE, truncated-encoder generations
(the DVC `analyze` stage)."""

from __future__ import annotations

from visual_words.commands import add_config_args, config_from_args


def cmd_analyze(args) -> int:
    cfg = config_from_args(args)
    import logging

    from visual_words.analysis.stage import PARTS, run

    logging.basicConfig(level=logging.INFO, format="[analyze] %(message)s")
    parts = args.only or list(PARTS)
    print(f"[analyze] profile={cfg.profile} parts={','.join(parts)} out={cfg.path(cfg.analyze.out_dir)}")
    written = run(cfg, parts, progress=not args.quiet)
    for part, path in written.items():
        print(f"[analyze] {part:<11} {path if path is not None else 'skipped (see the log above)'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "analyze", help="ε-ball statistics, t-SNE of pooled activations, truncated-encoder generations",
        description="Reads every trained word of the profile's trial grid (<train.out_dir>/<task>/<slug>.safetensors; "
        "any other embedding file there is skipped, and one line says how many) and, "
        "with analyze.transferred, maps each into the other two task models (`vw maps` files). eps: per vector and "
        "token table, the distance to the anchor (absolute and in units of d_nn(anchor)), cosine to the anchor, the "
        "anchor's rank among all tokens, the k nearest tokens, and token counts inside the vector's δ-ball and "
        "within f·d_nn (analyze.ball_factors) — fp32 BLAS + Numba, exact in fp64 where it matters -> eps_stats.csv. "
        "tsne: t-SNE of the end-of-text activation at four layers per model, dataset and word source -> tsne.csv. "
        "truncation: generations of one word with SD's text encoder cut after N layers (Fig. 7) -> truncation.csv "
        "+ PNGs. All under analyze.out_dir, with provenance.json.")
    add_config_args(p)
    p.add_argument("--only", nargs="+", choices=["eps", "tsne", "truncation"], metavar="PART",
                   help="run only these parts (eps, tsne, truncation; default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_analyze, takes_run_lock=True, loads_models=True, writes="analyze.out_dir")
