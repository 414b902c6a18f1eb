"""A task's slice of the workspace through Ray, without Ray: what the driver packs is what a worker's scratch
workspace holds (at the places the config names), what the task writes comes back, and the driver writes it where
a shared disk would have put it (data/staging.py)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from visual_words.config import load_config
from visual_words.data.manifest import ConceptSplit, ImageRecord, Manifest, read_manifest, write_manifest
from visual_words.data.staging import Bundle, Scratch, pack, workspace_key, write_back


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("VW_NODE_DIR", str(tmp_path / "node"))
    return tmp_path / "node"


def _cfg(repo_root, root, **overrides):
    cfg = load_config("smoke", repo_root / "params.yaml", overrides)
    return dataclasses.replace(cfg, root=str(root))


def test_files_travel_to_a_scratch_workspace_and_the_written_ones_come_back(repo_root, tmp_path, node):
    ws = tmp_path / "ws"
    outside = tmp_path / "elsewhere" / "embeddings"  # an absolute train.out_dir, outside the workspace
    cfg = _cfg(repo_root, ws, **{"train.out_dir": str(outside)})
    manifest = cfg.path(cfg.prepare.manifests_dir) / "coco.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"dataset": "coco"}')
    done = outside / "classification" / "done.safetensors"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"trained before")
    bundle = pack(cfg, [manifest, done, ws / "not-there.bin"])
    assert sorted(bundle.files) == sorted([done.as_posix(), manifest.relative_to(ws).as_posix()])
    assert bundle.nbytes == len(b"trained before") + len('{"dataset": "coco"}')

    with Scratch(cfg, [bundle]) as scratch:
        wcfg = scratch.cfg
        assert wcfg.root == str(node) and scratch.dir.parent == node / "tasks"
        # the config's folders point into the scratch workspace and hold exactly the shipped files
        local_manifest = wcfg.path(wcfg.prepare.manifests_dir) / "coco.json"
        assert local_manifest.read_text() == '{"dataset": "coco"}' and str(scratch.dir) in str(local_manifest)
        local_out = wcfg.path(wcfg.train.out_dir)
        assert (local_out / "classification" / "done.safetensors").read_bytes() == b"trained before"
        assert not outside.is_relative_to(scratch.dir) and local_out.is_relative_to(scratch.dir)
        # the task writes a new file, rewrites nothing else, leaves a checkpoint and a provenance record
        (local_out / "classification" / "new.safetensors").write_bytes(b"new vectors")
        (local_out / "classification" / "new.safetensors.json").write_text('{"sidecar": 1}')
        (local_out / "classification" / "provenance.json").write_text("{}")
        (local_out / "classification" / ".checkpoints").mkdir()
        (local_out / "classification" / ".checkpoints" / "k.pt").write_bytes(b"state")
        back = scratch.returned(cfg.train.out_dir)
        folder = scratch.dir
    assert not folder.exists()  # the scratch workspace is gone with the task
    new = (outside / "classification" / "new.safetensors").as_posix()
    assert back.files == {new: b"new vectors", new + ".json": b'{"sidecar": 1}'}

    written = write_back(cfg, back)
    assert [p.name for p in written] == ["new.safetensors", "new.safetensors.json"]  # the sidecar last
    assert (outside / "classification" / "new.safetensors").read_bytes() == b"new vectors"
    assert done.read_bytes() == b"trained before"


def test_a_manifest_with_an_absolute_image_root_finds_its_images_in_the_scratch_workspace(repo_root, tmp_path, node):
    ws = tmp_path / "ws"
    cfg = _cfg(repo_root, ws)
    images = tmp_path / "imagenet"  # outside the workspace, named by an absolute image_root
    (images / "train").mkdir(parents=True)
    (images / "train" / "a.jpg").write_bytes(b"jpeg bytes")
    rec = ImageRecord(file="train/a.jpg", width=4, height=4, label="cup")
    m = Manifest(dataset="imagenet", source="real", seed=0, image_root=str(images),
                 concepts={"cup": ConceptSplit([rec], [])})
    path = write_manifest(cfg.path(cfg.prepare.manifests_dir) / "imagenet.json", m)
    with Scratch(cfg, [pack(cfg, [path, images / "train" / "a.jpg"])]) as scratch:
        local = read_manifest(scratch.cfg.path(scratch.cfg.prepare.manifests_dir) / "imagenet.json")
        assert local.path_of(rec).read_bytes() == b"jpeg bytes"
        assert str(local.path_of(rec)).startswith(str(scratch.dir))
        assert local.concepts == m.concepts  # only where the images are changed
    assert json.loads(path.read_text())["image_root"] == str(images)  # the driver's manifest is untouched


def test_keys_are_relative_inside_the_workspace_and_absolute_outside(repo_root, tmp_path):
    cfg = _cfg(repo_root, tmp_path / "ws")
    assert workspace_key(cfg, tmp_path / "ws" / "artifacts" / "x.json") == "artifacts/x.json"
    assert workspace_key(cfg, tmp_path / "other" / "x.json") == (tmp_path / "other" / "x.json").as_posix()
    assert os.path.isabs(workspace_key(cfg, "/abs/file"))
    assert len(Bundle()) == 0 and Bundle({"a": b"12"}).nbytes == 2
