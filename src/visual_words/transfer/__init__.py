"""Linear transfer maps between models' token tables (docs/paper.md §5, docs/design.md D8).

    from visual_words.transfer import fit_map, load_map, map_path, map_between
    lmap = fit_map(X_src, Y_dst, "ols")          # X [n, d_src], Y [n, d_dst] (tensors or arrays)
    v_dst = lmap.apply(v_src)                    # [..., d_src] -> [..., d_dst], same type/dtype as the input
    lmap = load_map(map_path(cfg, "sd21", "owlv2"))

Layer: transfer (beside train and plan, which it does not import) (docs/design.md, "Layers"; `make lint` enforces
it). It may import reuse, data, models, eps_ball and the foundations; never evaluate or above.
"""

from visual_words.transfer.estimators import ESTIMATORS, LinearMap, Moments, fit_from_moments, fit_map, moments
from visual_words.transfer.files import MapFileError, check_tables, load_map, map_path, save_map
from visual_words.transfer.fitting import fit_pairs
from visual_words.transfer.maps import map_between, study_model_keys
from visual_words.transfer.quality import holdout_split, map_quality, r2, retrieval_at_1
from visual_words.transfer.vocab import shared_rows

__all__ = ["ESTIMATORS", "LinearMap", "MapFileError", "Moments", "check_tables", "fit_from_moments", "fit_map",
           "fit_pairs", "holdout_split", "load_map", "map_between", "map_path", "map_quality", "moments", "r2",
           "retrieval_at_1", "save_map", "shared_rows", "study_model_keys"]
