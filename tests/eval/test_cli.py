"""``fiber-fast eval`` end to end on the synthetic set with tiny untrained models, checked against the model's
plain forward (no lower-layer reuse, no image de-duplication)."""

import argparse
import json

import pytest
import torch
import yaml

from fiber_fast.data import load_tokenizer
from fiber_fast.data.synth import generate
from fiber_fast.eval import command, eval_cli, loading, retrieval, runner
from fiber_fast.models import FiberConfig, build_fiber, save_checkpoint


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    generate(root / "data", images=8, size=64, seed=0, val_images=3)
    torch.manual_seed(0)
    save_checkpoint(build_fiber(FiberConfig.preset("tiny")), root / "coarse.safetensors")
    run = root / "fine_run"
    run.mkdir()
    save_checkpoint(build_fiber(FiberConfig.preset("tiny", stage="fine", detection_head=True)),
                    run / "model.safetensors")
    (run / "train_config.yaml").write_text(yaml.safe_dump({"data": {"min_sizes": [48, 64], "max_size": 80}}))
    return root


def parse(argv):
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_retrieval_cli_equals_the_plain_forward(workspace, capsys):
    out = workspace / "retrieval.json"
    code = eval_cli.run(parse(["--task", "retrieval", "--checkpoint", str(workspace / "coarse.safetensors"),
                               "--data", str(workspace / "data"), "--out", str(out), "--batch-size", "4"]))
    assert code == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["num_images"] == 3 and report["num_texts"] == 6 and report["image_size"] == 64
    # Reference: every caption row through model(..., fusion=False) with its own image, one batch.
    model = loading.load_model(workspace / "coarse.safetensors")
    tokenizer = load_tokenizer(workspace / "data" / "tokenizer")
    (batch,) = list(loading.eval_loader("retrieval", workspace / "data", "val", tokenizer, 64, 32, 64))
    with torch.no_grad():
        out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], fusion=False)
        image_feat, text_feat, _ = model.itc_head(out.image_embeds, out.text_embeds)
    ids, first = batch["image_ids"].tolist(), {}
    for row, image_id in enumerate(ids):
        first.setdefault(image_id, row)
    order = sorted(first)
    expected = retrieval.retrieval_recall(image_feat[[first[i] for i in order]], text_feat,
                                          torch.tensor([order.index(i) for i in ids]))
    assert {k: report[k] for k in expected} == pytest.approx(expected, abs=1e-6)


def test_fusion_score_fn_equals_the_fused_forward(workspace):
    model = loading.load_model(workspace / "coarse.safetensors")
    tokenizer = load_tokenizer(workspace / "data" / "tokenizer")
    loader = loading.eval_loader("retrieval", workspace / "data", "val", tokenizer, 4, 32, 64)
    embeddings = runner.compute_retrieval_embeddings(model, loader, keep_inputs=True)
    score = runner.fusion_score_fn(model, embeddings, tokenizer.pad_token_id)
    image_rows, text_rows = torch.tensor([0, 2, 1, 0]), torch.tensor([5, 0, 3, 1])
    got = score(image_rows, text_rows)
    # Reference: the pairs re-tokenised from text and run through model(..., fusion=True) in one batch.
    texts = [tokenizer.decode(embeddings.texts[t], skip_special_tokens=True) for t in text_rows]
    encoded = tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model(embeddings.pixel_values[image_rows], encoded["input_ids"], encoded["attention_mask"], fusion=True)
        expected = model.itm_head(out)[:, 1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the two fine-model evaluations: about 30 s on the shared machine
@pytest.mark.parametrize("task", ["grounding", "detection"])
def test_fine_tasks_from_a_run_folder(workspace, task):
    out = workspace / f"{task}.json"
    code = eval_cli.run(parse(["--task", task, "--checkpoint", str(workspace / "fine_run"), "--data",
                               str(workspace / "data"), "--out", str(out)]))
    assert code == 0
    report = json.loads(out.read_text())
    assert (report["min_size"], report["max_size"]) == (64, 80)  # from the run's train_config.yaml
    if task == "grounding":
        assert report["num_phrases"] > 0 and 0 <= report["grounding_r1"] <= report["grounding_r5"] <= 1
    else:
        assert report["num_images"] == 3 and -1 <= report["AP"] <= 1


def test_bad_input_exits_with_status_2(workspace, capsys):
    missing = eval_cli.run(parse(["--task", "retrieval", "--checkpoint", str(workspace / "nothing"),
                                  "--data", str(workspace / "data")]))
    error = capsys.readouterr().err
    assert missing == 2 and error.startswith("fiber-fast eval: checkpoint ") and "does not exist" in error
    no_head = eval_cli.run(parse(["--task", "grounding", "--checkpoint", str(workspace / "coarse.safetensors"),
                                  "--data", str(workspace / "data")]))
    assert no_head == 2 and "detection head" in capsys.readouterr().err


def test_fine_sizes_take_the_flag_then_the_run_then_glip():
    run = {"min_sizes": [48, 64], "max_size": 80}
    assert command.fine_sizes({}, None, None) == (800, 1333)
    assert command.fine_sizes(run, None, None) == (64, 80)
    assert command.fine_sizes(run, 32, None) == (32, 80)
    assert command.fine_sizes(run, None, 100) == (64, 100)
    assert command.fine_sizes({"min_sizes": []}, None, None) == (800, 1333)


def test_run_timed_reports_bad_input_and_passes_other_errors(capsys):
    value, seconds = command.run_timed("eval", lambda: {"ok": 1})
    assert value == {"ok": 1} and 0 <= seconds < 5

    def missing():
        raise FileNotFoundError("annotation file x.json does not exist")

    assert command.run_timed("oscar extract", missing) is None
    assert capsys.readouterr().err == "fiber-fast oscar extract: annotation file x.json does not exist\n"

    def broken():
        raise RuntimeError("a bug, not bad input")

    with pytest.raises(RuntimeError, match="a bug"):
        command.run_timed("eval", broken)
