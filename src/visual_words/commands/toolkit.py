"""`vw inspect` and `vw transfer`: the practitioner's toolkit for any textual-inversion embedding file."""

from __future__ import annotations

import json
from pathlib import Path

from visual_words.commands import add_config_args, config_from_args

FORMATS = ("ours (.safetensors + .json sidecar), diffusers learned_embeds .bin/.safetensors, Automatic1111 .pt, "
           "SDXL {clip_l, clip_g}, raw tensors [d] / [n, d]")
MODEL_HELP = ("a registry key (`vw models`) or a local folder: a diffusers Stable Diffusion 1.x/2.x pipeline "
              "(model_index.json), an open_clip checkpoint (open_clip_config.json), or a transformers OWL-ViT/OWLv2 "
              "or CLIP checkpoint (config.json)")


def _load(spec: str, root=None):
    """Resolve --model/--from/--to and load it through the production loader (frozen, CPU, fp32: exact tables)."""
    from visual_words.models.loading import load_model
    from visual_words.toolkit.models import resolve_model

    return load_model(resolve_model(spec, root), device="cpu", precision="fp32", root=root)


def _early_width_check(emb, token, spec: str, root=None) -> None:
    """Refuse a width mismatch before loading a (possibly multi-GB) model: the registry/folder config knows it."""
    from visual_words.embeddings import EmbeddingFileError, check_width
    from visual_words.toolkit.inspection import fitting_models, select_tokens
    from visual_words.toolkit.models import resolve_model

    entry = resolve_model(spec, root)
    for name, vecs in select_tokens(emb, token, entry.text_width).items():
        try:
            check_width(emb, name, entry.text_width, entry.key)
        except EmbeddingFileError as e:
            fits = fitting_models(int(vecs.shape[-1]))
            known = fits["registry"] + fits["community"]
            raise EmbeddingFileError(f"{e}; width {vecs.shape[-1]} fits: {', '.join(known) or 'no known model'}") \
                from None


def cmd_inspect(args) -> int:
    from visual_words.embeddings import EmbeddingTooLarge, read_embedding
    from visual_words.toolkit.inspection import format_report, inspect_embedding, inspect_large

    if args.k < 1:
        raise ValueError(f"-k must be ≥ 1, got {args.k}")
    if any(not d > 0 for d in args.deltas):
        raise ValueError(f"--deltas must be > 0 (units of d_nn(init)), got {args.deltas}")
    try:
        emb = read_embedding(args.file)
    except EmbeddingTooLarge as e:
        if args.model:  # its vectors would be searched against the vocabulary one by one: not for such a file
            raise
        report = inspect_large(e.path, e.shapes, all_vectors=args.all_vectors)  # in chunks: bounded memory
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    loaded = None
    if args.model:
        _early_width_check(emb, args.token, args.model)
        loaded = _load(args.model)
    report = inspect_embedding(emb, loaded, init=args.init, token=args.token, k=args.k, deltas=args.deltas,
                               all_vectors=args.all_vectors)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _safe(text: str) -> str:
    """A line that quotes names from a file, with control characters escaped (see errors.printable)."""
    from visual_words.errors import printable

    return printable(text)


def cmd_transfer(args) -> int:
    from visual_words.embeddings import read_embedding
    from visual_words.toolkit.transfer import check_output, default_output, transfer_embedding

    if args.estimator:
        args.overrides = [*args.overrides, f"maps.estimator={args.estimator}"]
    cfg = config_from_args(args)
    emb = read_embedding(args.file)
    out = Path(args.out) if args.out else default_output(emb, Path(args.dst).name)
    check_output(out, args.force)  # before loading anything
    from visual_words.toolkit.models import resolve_model

    if resolve_model(args.src, cfg.root).key == resolve_model(args.dst, cfg.root).key:
        raise ValueError(f"--from and --to are the same model `{args.src}`; nothing to transfer")
    _early_width_check(emb, args.token, args.src, cfg.root)
    src, dst = _load(args.src, cfg.root), _load(args.dst, cfg.root)
    r = transfer_embedding(emb, src, dst, cfg, out, token=args.token, name=args.name, force=args.force, k=args.k)
    m, q = r.sidecar["map"], r.sidecar["map"].get("quality") or {}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(_safe(f"[transfer] {emb.path} ({emb.format}) token {r.sidecar['transferred_from']['token']} "
          f"[{src.entry.key}, width {src.entry.text_width}] -> {r.path} token {r.token} "
          f"[{dst.entry.key}, width {r.vectors.shape[1]}], {r.vectors.shape[0]} vector(s)"))
    print(_safe(f"[transfer] map: {m['estimator']} {'reused' if r.map_reused else 'fitted and cached'} {r.map_file}; "
          f"held-out R² {fmt(q.get('r2'))}, retrieval@1 {fmt(q.get('retrieval_at_1'))}"))
    for i, row in enumerate(r.sidecar["nearest_tokens"]):
        print(_safe(f"[transfer] vector {i} nearest {dst.entry.key} words: "
              + " · ".join(f"{w['token']!r} {w['distance']:.4f}" for w in row)))
    print(_safe(f"WARNING: {r.warning}"))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "inspect", help="what a textual-inversion embedding file holds, and where its vectors sit in a model",
        description=f"Reads any supported embedding file ({FORMATS}). Without --model it prints what the file alone "
        "tells: format, tokens, shapes, per-vector norms, recorded provenance, and which known models' text widths "
        "it fits. With --model it also prints, per vector, the nearest vocabulary tokens by L2 and by cosine (decoded, "
        "with distances), the nearest word's distance in units of that word's d_nn (its distance to its own nearest "
        "other token), and, for the init word (--init, or the `anchor` our sidecars record), the distance in units of "
        "d_nn(init), the cosine, the rank of the init among all tokens and the ε-ball statistics (docs/paper.md §4).")
    p.add_argument("file", help="the embedding file")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--init", help="the init (anchor) word to measure from (default: the sidecar's `anchor`)")
    p.add_argument("--token", help="only this token of the file (SDXL: clip_l or clip_g; default: by --model width)")
    p.add_argument("-k", type=int, default=5, help="nearest tokens to list per vector (default 5)")
    p.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0], metavar="δ",
                   help="ε-ball radii in units of d_nn(init) (default: the paper's 0.1 0.2 0.5 1.0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--all-vectors", action="store_true", help="list every vector (default: the first 16, and a "
                   "summary of all norms; a file declaring millions of values is read in chunks either way)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "transfer", help="map an embedding into another model through the linear map between their token tables",
        description="Maps every vector of the file's token from model --from into model --to with the linear map "
        "between the two models' token tables, fitted on their shared vocabulary (the paper's least squares by "
        "default; maps.* settings in params.yaml). A cached map under maps.out_dir is reused when it was fitted on "
        "these exact tables (hashes match); otherwise the map is fitted and cached. Writes a safetensors file "
        "{token: [n, d]} that diffusers' load_textual_inversion (SD family) and the project's readers accept, with a "
        "JSON sidecar naming the source, the map (estimator, table hashes), its held-out quality (R², retrieval@1), "
        "the nearest target words of the mapped vectors, and what the paper found about transferred tokens — "
        "printed too. It is a warning, not a promise: transferred tokens mostly act like their nearest shared word.")
    p.add_argument("file", help=f"the embedding file ({FORMATS})")
    p.add_argument("--from", dest="src", required=True, help=f"the model the file was trained for: {MODEL_HELP}")
    p.add_argument("--to", dest="dst", required=True, help="the target model (same forms as --from)")
    p.add_argument("--estimator", choices=("ols", "ridge", "procrustes", "affine"),
                   help="map estimator (default: maps.estimator in params.yaml, `ols` = the paper's)")
    p.add_argument("-o", "--out", help="output .safetensors (default: ./<file stem>.<target>.safetensors)")
    p.add_argument("--token", help="which token of the file (SDXL: clip_l or clip_g; default: by --from width)")
    p.add_argument("--name", help="token name in the output file (default: the source token's name)")
    p.add_argument("-k", type=int, default=5, help="nearest target words to record per vector (default 5)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_config_args(p)
    p.set_defaults(func=cmd_transfer)
