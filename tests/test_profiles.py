"""Each profile's outputs kept apart: every output folder is the profile's own (params.yaml's `{profile}`, the same
folders as dvc.yaml's `${profile}`), and every stage reads only the trials of its profile's grid, so a second
profile run in a workspace that already holds another's words gives what it gives in an empty one."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from visual_words.config import load_config
from visual_words.runlock import OUTPUT_DIRS
from visual_words.tracking import experiment_name

SHARED = {"prepare.cache_dir"}  # the feature cache: content-addressed (model fingerprint + image hash)


def _get(cfg, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def _outputs(cfg) -> dict[str, Path]:
    """Every folder a stage writes for `cfg`'s profile (the report's: <report.out_dir>/<profile>/)."""
    dirs = {k: cfg.path(_get(cfg, k)).resolve() for k in OUTPUT_DIRS if k not in SHARED | {"report.out_dir"}}
    return dirs | {"report": (cfg.path(cfg.report.out_dir) / cfg.profile).resolve()}


def test_every_profile_writes_into_folders_and_experiments_of_its_own(repo_root):
    names = list(yaml.safe_load((repo_root / "params.yaml").read_text())["profiles"])
    assert {"smoke", "claims", "paper", "rehearsal"} <= set(names)
    owner: dict[Path, str] = {}
    experiments: set[str] = set()
    for name in names:
        cfg = load_config(name, repo_root / "params.yaml")
        for what, folder in _outputs(cfg).items():
            assert name in folder.relative_to(cfg.root).parts, (name, what, folder)
            for other, who in owner.items():  # no folder is another profile's, nor inside or around one
                assert not (folder == other or folder.is_relative_to(other) or other.is_relative_to(folder)), \
                    (f"{name}.{what}", who)
            owner[folder] = f"{name}.{what}"
        for stage in ("train", "evaluate", "maps"):
            experiments.add(experiment_name(cfg, stage))
    assert len(experiments) == 3 * len(names)
    # `{profile}` is replaced wherever it stands, also in a value given with --set
    cfg = load_config("smoke", repo_root / "params.yaml", {"evaluate.out_dir": "/x/{profile}/ev"})
    assert cfg.evaluate.out_dir == "/x/smoke/ev"


def test_dvc_yaml_names_the_default_profiles_own_folders(repo_root):
    cfg = load_config(None, repo_root / "params.yaml")  # the params file's profile: what `dvc repro` runs
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]

    def paths(stage, kind):
        return [str(next(iter(o)) if isinstance(o, dict) else o).replace("${profile}", cfg.profile)
                for o in stages[stage].get(kind, [])]

    p = cfg.prepare
    assert paths("prepare", "outs") == [p.manifests_dir, p.synthetic_root]
    for stage, section in (("maps", cfg.maps), ("train", cfg.train), ("evaluate", cfg.evaluate),
                           ("analyze", cfg.analyze)):
        assert paths(stage, "outs") == [section.out_dir], stage
    assert {cfg.maps.out_dir, cfg.train.out_dir, p.manifests_dir} <= set(paths("evaluate", "deps"))
    assert {cfg.train.out_dir, cfg.maps.out_dir} <= set(paths("analyze", "deps"))
    assert all(o.startswith(f"{cfg.report.out_dir}/{cfg.profile}/") for o in paths("report", "outs"))
    assert f"{cfg.evaluate.out_dir}/evaluation.csv" in paths("report", "deps")


def test_stages_read_only_the_grids_words_and_count_the_rest_in_one_line(repo_root, tmp_path, capsys):
    import torch

    from visual_words.embeddings import write_embedding
    from visual_words.trained import grid_words, read_sidecar
    from visual_words.trials import embedding_path, trial_grid

    cfg = load_config("smoke", repo_root / "params.yaml", {"train.out_dir": str(tmp_path / "emb")})
    grid = trial_grid(cfg)
    for k, trial in enumerate(grid[:2]):
        write_embedding(embedding_path(cfg, trial), trial.token, torch.full((2, 32), float(k)),
                        {"trial": trial.to_dict(), "model_key": trial.model, "token_table_hash": "ab" * 8})
    strays = [tmp_path / "emb" / "classification" / "x.safetensors", tmp_path / "emb" / "old" / "y.safetensors"]
    for p in strays:
        write_embedding(p, "<x>", torch.ones(1, 32), {})
    words, missing = grid_words(cfg, "evaluate")
    assert [w.trial.id for w in words] == [t.id for t in grid[:2]] and missing == len(grid) - 2
    assert [float(w.vectors[0, 0]) for w in words] == [0.0, 1.0] and words[0].model_key == grid[0].model
    assert capsys.readouterr().err.splitlines() == [
        f"[evaluate] skipped 2 embedding files under {tmp_path / 'emb'} outside profile smoke's trial grid "
        "(e.g. x.safetensors)"]
    assert read_sidecar(embedding_path(cfg, grid[0]))["token_table_hash"] == "ab" * 8
    assert read_sidecar(embedding_path(cfg, grid[2])) is None  # not trained yet
    (tmp_path / "emb" / "old" / "y.safetensors.json").write_text("[1, 2]")
    assert read_sidecar(strays[1]) is None  # a sidecar that is not a JSON object: not a finished word


# ---------------------------------------------------------------------------------------------------------------
# Two profiles in one workspace, on the tiny models


def _workspace(ws: Path, repo_root: Path) -> Path:
    """A workspace whose params.yaml has the smoke profile shrunk to 6 trials (coco, 2 concepts × 1 anchor × δ 0.5
    × 3 tasks) and a second profile, `second`, with the same models and δ = 1.0 instead."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    smoke = params["profiles"]["smoke"]
    smoke["study"].update(datasets=["coco"], concepts_per_dataset=2, anchors_per_concept=1, unconstrained=False)
    smoke["train"]["steps"] = 2
    smoke["evaluate"]["inference_steps"] = 2
    second = copy.deepcopy(smoke)
    second["study"]["deltas"] = [1.0]
    params["profiles"]["second"] = second
    (ws / "artifacts").mkdir(parents=True)
    (ws / "artifacts" / "tiny").symlink_to(repo_root / "artifacts" / "tiny")  # the tiny checkpoints, built once
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws / "params.yaml"


def _study(params: Path, profile: str):
    """prepare → maps → train (in this process) → evaluate → the analysis's ε-ball table, for one profile."""
    from visual_words.analysis import stage as analysis
    from visual_words.data import stage as data
    from visual_words.evaluate import stage as evaluate
    from visual_words.train.loop import train_trials
    from visual_words.transfer import stage as maps
    from visual_words.trials import trial_grid

    cfg = load_config(profile, params, {"maps.holdout_fraction": 0.0})
    data.run(cfg, progress=False)
    maps.run(cfg, progress=False)
    train_trials(cfg, trial_grid(cfg), progress=False)
    evaluate.run(cfg, progress=False, engine="local")
    analysis.run(cfg, parts=["eps"], progress=False)
    return cfg


def _outputs_of(cfg) -> tuple[str, str]:
    return ((cfg.path(cfg.evaluate.out_dir) / "evaluation.csv").read_text(),
            (cfg.path(cfg.analyze.out_dir) / "eps_stats.csv").read_text())


@pytest.mark.slow
def test_a_second_profile_after_smoke_and_a_stray_word_change_nothing(repo_root, tmp_path, capsys, tiny_sd, tiny_owl,
                                                                      tiny_clip, tiny_clip_eval):
    from visual_words.analysis import stage as analysis
    from visual_words.evaluate import stage as evaluate
    from visual_words.evaluate.runner import read_table

    shared = _workspace(tmp_path / "shared", repo_root)
    smoke = _study(shared, "smoke")
    smoke_rows = _outputs_of(smoke)
    second = _study(shared, "second")
    empty = _study(_workspace(tmp_path / "empty", repo_root), "second")

    # Kept apart: the second profile's results are the ones of an empty workspace, made of its own six words …
    assert _outputs_of(second) == _outputs_of(empty)
    table = read_table(second.path(second.evaluate.out_dir) / "evaluation.csv")
    assert len(table) == 18 and set(table.delta) == {1.0}
    assert second.path(second.train.out_dir) == tmp_path / "shared" / "artifacts" / "second" / "embeddings"
    # … and the smoke profile's outputs are untouched by it.
    assert _outputs_of(smoke) == smoke_rows

    # A stray word in the folder (here one of smoke's, copied in) is skipped with one line and changes nothing.
    word = next(smoke.path(smoke.train.out_dir).glob("classification/*.safetensors"))
    stray = second.path(second.train.out_dir) / "classification" / word.name
    for f in (word, Path(f"{word}.json")):
        shutil.copy(f, stray.parent / f.name)
    capsys.readouterr()
    evaluate.run(second, progress=False, engine="local")
    analysis.run(second, parts=["eps"], progress=False)
    assert _outputs_of(second) == _outputs_of(empty)
    err = capsys.readouterr().err
    for stage in ("evaluate", "analyze"):
        assert (f"[{stage}] skipped 1 embedding file under artifacts/second/embeddings outside profile second's "
                f"trial grid (e.g. {word.name})") in err.splitlines()
