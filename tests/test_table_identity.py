"""One identity for a token table, whatever precision it is loaded in (models/table_identity.py).

Training on a GPU loads the frozen models at fp16/bf16; analysis loads them at fp32. Both must recognise the same
checkpoint, so the identity is taken from the table as the checkpoint file stores it, never from the live (cast)
parameter. The end-to-end test runs every stage of the smoke profile with half-precision training and evaluation
and fp32 analysis — the combination that used to stop the analysis at its first token.
"""

import json
import shutil

import pytest
import torch

from visual_words.cli import main
from visual_words.embeddings import table_hash
from visual_words.models.adapters import adapter_for
from visual_words.models.loading import load_model
from visual_words.models.table_identity import TableIdentityError, identity_of_stored_table, stored_table_location
from visual_words.models.token_table import TokenTable
from visual_words.registry import model


@pytest.mark.parametrize("key", ["tiny-sd", "tiny-owlv2", "tiny-clip", "tiny-clip-eval"])
def test_identity_does_not_depend_on_the_load_precision(repo_root, key):
    ids = {p: load_model(key, precision=p, root=repo_root) for p in ("fp32", "bf16")}
    fp32_table, bf16_table = TokenTable.of(ids["fp32"]), TokenTable.of(ids["bf16"])
    if adapter_for(ids["bf16"]).embedding.weight.dtype == torch.bfloat16:  # open_clip's bf16 keeps it fp32
        assert table_hash(fp32_table.weights) != table_hash(bf16_table.weights)  # the live tables differ (rounded) …
    # … the identity does not, and it is the hash of the table as stored (fp32 here); the TokenTable carries it
    assert ids["fp32"].table_identity == ids["bf16"].table_identity == table_hash(fp32_table.weights)
    assert fp32_table.identity == bf16_table.identity == ids["fp32"].table_identity
    assert fp32_table.meta["table_hash"] == fp32_table.identity  # what map sidecars record


def test_identity_reads_pickled_and_sharded_checkpoints(repo_root, tmp_path):
    """A `.bin` checkpoint and a sharded safetensors checkpoint of the same weights have the same identity."""
    from transformers import CLIPModel

    loaded = load_model("tiny-clip-eval", root=repo_root)
    src = model("tiny-clip-eval").local_dir
    src = src if src.is_absolute() else repo_root / src
    want = loaded.table_identity
    pickled, sharded = tmp_path / "pickled", tmp_path / "sharded"
    m = CLIPModel.from_pretrained(src)
    pickled.mkdir()  # an older checkpoint: a pickled state dict (transformers now writes only safetensors)
    torch.save(m.state_dict(), pickled / "pytorch_model.bin")
    m.save_pretrained(sharded, max_shard_size="200KB")
    assert (pickled / "pytorch_model.bin").is_file()
    assert (sharded / "model.safetensors.index.json").is_file()
    assert identity_of_stored_table("hf-clip", str(pickled)) == want
    assert identity_of_stored_table("hf-clip", str(sharded)) == want
    path, name = stored_table_location("hf-clip", str(sharded))
    assert name.endswith("embeddings.token_embedding.weight") and path.parent == sharded


def test_identity_changes_with_the_stored_table_and_names_a_missing_one(repo_root, tmp_path):
    src = model("tiny-clip-eval").local_dir
    folder = tmp_path / "copy"
    shutil.copytree(src if src.is_absolute() else repo_root / src, folder)
    before = identity_of_stored_table("hf-clip", str(folder))
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["text_model.embeddings.token_embedding.weight"][7, 0] += 1.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    assert identity_of_stored_table("hf-clip", str(folder)) != before
    (folder / "model.safetensors").unlink()
    with pytest.raises(TableIdentityError, match="no stored token table found"):
        identity_of_stored_table("hf-clip", str(folder))


def test_a_model_built_in_memory_must_say_its_identity(repo_root):
    from dataclasses import replace

    loaded = load_model("tiny-clip", root=repo_root)
    anonymous = replace(loaded, table_identity=None)
    with pytest.raises(ValueError, match="built in memory"):
        adapter_for(anonymous).table_identity
    with pytest.raises(ValueError, match="built in memory"):
        TokenTable.of(anonymous)  # a table never travels without its identity


def _out_dirs(tmp):
    return {"prepare.manifests_dir": tmp / "manifests", "prepare.cache_dir": tmp / "cache",
            "maps.out_dir": tmp / "maps", "train.out_dir": tmp / "embeddings", "evaluate.out_dir": tmp / "evaluation",
            "analyze.out_dir": tmp / "analysis", "report.out_dir": tmp / "reports"}


def _half_precision_supported(dtype) -> bool:
    try:
        x = torch.ones(2, 3, 8, 8, dtype=dtype)
        torch.nn.functional.conv2d(x, torch.ones(3, 3, 3, 3, dtype=dtype), padding=1).sum().item()
        torch.nn.functional.group_norm(x, 1).sum().item()
        return True
    except (RuntimeError, NotImplementedError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_smoke_study_trained_in_half_precision_is_analysed_at_fp32(repo_root, tmp_path, precision):
    """Every stage (in-process: prepare, maps, train, evaluate, analyze, report) with the task models at half
    precision for maps, training and evaluation, and at fp32 for the analysis: the sidecars' identity matches the
    fp32 tables, and the analysis and report run through."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if not _half_precision_supported(dtype):
        pytest.skip(f"this CPU's torch build has no {precision} conv/group-norm kernels")
    sets = {**{k: str(v) for k, v in _out_dirs(tmp_path).items()}, "train.precision": precision,
            "evaluate.precision": precision, "study.datasets": "[coco]", "study.concepts_per_dataset": "2",
            "study.anchors_per_concept": "1", "study.unconstrained": "false"}
    args = ["--profile", "smoke", "--params", str(repo_root / "params.yaml")]
    args += sum((["--set", f"{k}={v}"] for k, v in sets.items()), [])
    for stage in (["data", "prepare"], ["maps", "--quiet"], ["train"], ["evaluate", "run"], ["analyze"], ["report"]):
        assert main([*stage, *args]) == 0, stage

    sidecars = sorted((tmp_path / "embeddings").rglob("*.safetensors.json"))
    assert len(sidecars) == 3 * 2  # tasks × concepts (one anchor, δ = 0.5)
    for task, key in (("generation", "tiny-sd"), ("detection", "tiny-owlv2"), ("classification", "tiny-clip")):
        fp32 = load_model(key, precision="fp32", root=repo_root)
        for sc in (tmp_path / "embeddings" / task).glob("*.safetensors.json"):
            meta = json.loads(sc.read_text())
            assert meta["token_table_hash"] == fp32.table_identity
            assert meta["token_table_hash"] != table_hash(TokenTable.of(adapter_for(fp32)).weights.to(dtype))
    assert (tmp_path / "analysis").is_dir() and any((tmp_path / "analysis").glob("*.csv"))
    assert (tmp_path / "reports" / "smoke" / "index.html").is_file()
    rows = (tmp_path / "evaluation" / "evaluation.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 3  # every trial in its own model and the two others


def test_identity_of_a_family_without_a_known_location_is_one_clear_error():
    with pytest.raises(TableIdentityError, match="no token-table location known for model family `siglip`"):
        identity_of_stored_table("siglip", "somewhere")


def test_an_owl_checkpoint_stored_as_the_published_pickle_loads_with_the_same_identity(repo_root, tmp_path):
    """OWLv2 is baked as its published pickle (pins.yaml): the production loader reads it (weights_only), and the
    table identity is the one of the safetensors form."""
    from dataclasses import replace

    from safetensors.torch import load_file

    base = model("tiny-owlv2")
    src = base.local_dir if base.local_dir.is_absolute() else repo_root / base.local_dir
    ref = load_model("tiny-owlv2", root=repo_root)
    folder = tmp_path / "owl-pickle"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors", "tiny-model.json"))
    torch.save(load_file(src / "model.safetensors"), folder / "pytorch_model.bin")
    loaded = load_model(replace(base, key="owl-pickle", id=str(folder), tiny=None), root=repo_root)
    assert loaded.table_identity == ref.table_identity
    for name, tensor in ref.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
