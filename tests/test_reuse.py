"""Reuse keys (visual_words.reuse, docs/reuse.md): declared settings + digests of what an output read + code versions.
The scenarios run the real prepare stage on the smoke profile's synthetic datasets and compare every trial key and
every evaluation-row key of the grid before and after one change."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import sys

import pytest

from visual_words import code_versions, reuse
from visual_words.config import OUTPUTS, SECTIONS, load_config
from visual_words.data.manifest import manifest_path, read_manifest
from visual_words.trials import TASKS, trial_grid

DATASETS = ["dreambooth", "pascal", "coco"]


# ---- declarations and code versions -------------------------------------------------------------------------------


def test_every_config_field_declares_what_it_invalidates():
    decl = reuse.declarations()
    assert len(decl) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())
    undeclared = [k for k, d in decl.items() if not d["declared"]]
    assert not undeclared, f"config fields without an `affects(...)` declaration: {undeclared}"
    assert decl["train.log_every"]["invalidates"] == () and decl["train.log_every"]["via"] == ""
    assert decl["train.flip_augment"]["invalidates"] == ("train.generation",)
    assert decl["prepare.voc_image_sets"]["invalidates"] == () and "manifest" in decl["prepare.voc_image_sets"]["via"]


def test_result_defining_code_has_a_recorded_version():
    stale = code_versions.stale_pieces()
    assert not stale, (
        "result-defining code changed without a version decision: "
        + "; ".join(f"{name} (recorded {old}, now {new})" for name, old, new in stale)
        + ". If results change: `vw versions --record PIECE --bump`; if not (a refactor): "
          "`vw versions --record PIECE`. See src/visual_words/code_versions.yaml.")


def test_pieces_name_known_outputs_and_existing_code():
    from visual_words.data.features import KINDS as COMPUTE

    known = set(OUTPUTS) | {f"features.{k}" for k in COMPUTE}
    for name, p in code_versions._versions_file().items():
        assert set(p["outputs"]) <= known, name
        assert p["code"] and code_versions.fingerprint(p["code"])  # every reference resolves
    for kind in COMPUTE:
        assert code_versions.feature_version(kind)


def test_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = [
        'def f(x):\n    """Doc."""\n    return x + 1\n',
        'def f(x):  # a comment\n    """Other doc."""\n\n    return (x +\n            1)\n',
        'def f(x):\n    return x + 2\n',
    ]
    prints = []
    name = "vw_fp_probe"
    for src in versions:
        (tmp_path / f"{name}.py").write_text(src)
        importlib.invalidate_caches()
        prints.append(code_versions.fingerprint([f"{name}:f"]))
        sys.modules.pop(name, None)
    assert prints[0] == prints[1] != prints[2]


def test_record_rewrites_only_the_named_piece(tmp_path, monkeypatch):
    src = code_versions.versions_path().read_text()
    target = tmp_path / "code_versions.yaml"
    recorded = code_versions._versions_file()["maps"]["fingerprint"]
    target.write_text(src.replace("fingerprint: " + recorded, "fingerprint: old"))
    monkeypatch.setattr(code_versions, "versions_path", lambda: target)
    monkeypatch.setattr(code_versions, "_versions_file", _loader(target))
    assert [n for n, _, _ in code_versions.stale_pieces()] == ["maps"]
    code_versions.record(["maps"], bump=True)
    after = code_versions._versions_file()
    assert after["maps"]["version"] == 2 and not code_versions.stale_pieces()
    changed = [(a, b) for a, b in zip(src.splitlines(), target.read_text().splitlines()) if a != b]
    assert changed == [("    version: 1", "    version: 2")]  # the fingerprint line is back to the recorded one


def _loader(path):
    import functools

    import yaml

    @functools.cache
    def load():
        return yaml.safe_load(path.read_text())["pieces"]
    return load


# ---- scenarios on the real prepare stage ---------------------------------------------------------------------------


@pytest.fixture
def study(repo_root, tmp_path):
    from visual_words.data.prepare import prepare

    def cfg_for(**extra):
        return load_config("smoke", repo_root / "params.yaml", {
            "prepare.manifests_dir": str(tmp_path / "manifests"), "prepare.cache_dir": str(tmp_path / "cache"),
            "prepare.synthetic_root": str(tmp_path / "synthetic"), "train.out_dir": str(tmp_path / "emb"),
            "study.datasets": DATASETS, **extra})

    cfg = cfg_for()
    prepare(cfg, features=False, progress=False)
    return cfg, cfg_for, tmp_path


def _trial_keys(cfg, versions=None):
    return {t.id: reuse.trial_key(cfg, t, versions=versions) for t in trial_grid(cfg)}


def _eval_keys(cfg, trial_keys, versions=None):
    """Every (trial, evaluated task) row's key; the embedding file a trial wrote changes exactly when it is
    retrained, so its trial key stands for the file's digest here."""
    out = {}
    for t in trial_grid(cfg):
        for ev in TASKS:
            map_digest = None if ev == t.task else f"map {t.task}->{ev}"
            out[(t.id, ev)] = reuse.evaluation_key(cfg, t, ev, cfg.study.models[ev], trial_keys[t.id], map_digest,
                                                   versions)
    return out


def _changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def _edit_dreambooth_box(cfg, record) -> None:
    path = cfg.path(cfg.prepare.synthetic_root) / "dreambooth" / "dreambooth_boxes.json"
    boxes = json.loads(path.read_text())
    entry = boxes["images"][record.file]
    entry["boxes"][0]["bbox"][0] += 3  # a reviewer moves one box by 3 pixels
    path.write_text(json.dumps(boxes))


def test_editing_one_dreambooth_box_retrains_exactly_that_concepts_detection_trials(study):
    from visual_words.data.prepare import prepare

    cfg, _, _ = study
    before = _trial_keys(cfg)
    rows_before = _eval_keys(cfg, before)
    m = read_manifest(manifest_path(cfg, "dreambooth"))
    concept = list(m.concepts)[1]
    _edit_dreambooth_box(cfg, m.concepts[concept].train[0])
    prepare(cfg, datasets=["dreambooth"], features=False, progress=False)

    after = _trial_keys(cfg)
    retrained = _changed(before, after)
    expected = {t.id for t in trial_grid(cfg) if (t.dataset, t.concept, t.task) == ("dreambooth", concept, "detection")}
    assert retrained == expected and len(expected) == 4  # 2 anchors × (δ 0.5, ∞)
    # re-evaluated: the retrained tokens on all three tasks, nothing else (the box is on a training image)
    assert _changed(rows_before, _eval_keys(cfg, after)) == {(tid, ev) for tid in expected for ev in TASKS}


def test_editing_a_held_out_box_re_evaluates_that_datasets_detection_rows_only(study):
    from visual_words.data.prepare import prepare

    cfg, _, _ = study
    before = _trial_keys(cfg)
    rows_before = _eval_keys(cfg, before)
    m = read_manifest(manifest_path(cfg, "dreambooth"))
    concept = list(m.concepts)[0]
    _edit_dreambooth_box(cfg, m.concepts[concept].eval[0])
    prepare(cfg, datasets=["dreambooth"], features=False, progress=False)

    after = _trial_keys(cfg)
    assert not _changed(before, after)  # no trial trained on it
    # detection scores every dataset word on the pooled held-out images, but only the target's boxes count:
    # the rows whose target is the edited concept
    assert _changed(rows_before, _eval_keys(cfg, after)) == {
        (t.id, "detection") for t in trial_grid(cfg) if (t.dataset, t.concept) == ("dreambooth", concept)}


def test_changing_voc_image_sets_retrains_the_pascal_trials(study):
    from visual_words.data.prepare import prepare

    cfg, cfg_for, _ = study
    before = _trial_keys(cfg)
    voc = cfg.path(cfg.prepare.synthetic_root) / "pascal" / "VOCdevkit" / "VOC2012" / "ImageSets"
    m = read_manifest(manifest_path(cfg, "pascal"))
    dropped = {r.file.rsplit("/", 1)[-1].removesuffix(".jpg") for s in m.concepts.values() for r in s.train[:1]}
    (voc / "Segmentation").mkdir()
    for split in ("train", "val"):  # the Segmentation lists: the Main lists without one training image per concept
        ids = (voc / "Main" / f"{split}.txt").read_text().split()
        (voc / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids if i not in dropped))
    seg = cfg_for(**{"prepare.voc_image_sets": "Segmentation"})
    prepare(seg, datasets=["pascal"], features=False, progress=False)

    retrained = _changed(before, _trial_keys(seg))
    assert retrained == {t.id for t in trial_grid(cfg) if t.dataset == "pascal"} and retrained


def test_bumping_the_loss_version_retrains_that_task_only(study):
    cfg, _, _ = study
    before = _trial_keys(cfg)
    rows_before = _eval_keys(cfg, before)
    bumped = copy.deepcopy(code_versions._versions_file())
    bumped["loss.detection"]["version"] += 1
    after = _trial_keys(cfg, bumped)
    detection = {t.id for t in trial_grid(cfg) if t.task == "detection"}
    assert _changed(before, after) == detection
    assert _changed(rows_before, _eval_keys(cfg, after, bumped)) == {(tid, ev) for tid in detection for ev in TASKS}
    # a metric's version re-evaluates its task's rows and retrains nothing
    metric = copy.deepcopy(code_versions._versions_file())
    metric["metric.classification"]["version"] += 1
    assert not _changed(before, _trial_keys(cfg, metric))
    assert _changed(rows_before, _eval_keys(cfg, before, metric)) == {
        k for k in rows_before if k[1] == "classification"}


def test_log_only_settings_retrain_and_re_evaluate_nothing(study):
    cfg, cfg_for, _ = study
    before = _trial_keys(cfg)
    rows_before = _eval_keys(cfg, before)
    changed = cfg_for(**{"train.log_every": 7, "train.checkpoint_every": 3, "train.trials_per_batch": 5,
                         "evaluate.bootstrap_resamples": 50, "sweep.num_workers": 1})
    after = _trial_keys(changed)
    assert not _changed(before, after)
    assert not _changed(rows_before, _eval_keys(changed, after))
    # while a declared one does: more steps retrain every trial
    assert _changed(before, _trial_keys(cfg_for(**{"train.steps": 11}))) == set(before)


def test_vw_versions_lists_pieces_and_says_how_to_record_a_change(tmp_path, monkeypatch, capsys):
    from visual_words.cli import main

    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert "loss.detection" in out and "recorded" in out and "CHANGED" not in out
    target = tmp_path / "code_versions.yaml"
    fp = code_versions._versions_file()["loss.detection"]["fingerprint"]
    target.write_text(code_versions.versions_path().read_text().replace(f"fingerprint: {fp}", "fingerprint: old"))
    monkeypatch.setattr(code_versions, "versions_path", lambda: target)
    monkeypatch.setattr(code_versions, "_versions_file", _loader(target))
    assert main(["versions"]) == 1
    out = capsys.readouterr().out
    assert f"loss.detection               v1   CHANGED (now {fp})" in out
    assert "vw versions --record PIECE --bump" in out
    assert main(["versions", "--record", "loss.detection"]) == 0 and main(["versions"]) == 0
    assert main(["versions", "--record", "no-such-piece"]) == 2
    assert "no piece `no-such-piece`" in capsys.readouterr().err
