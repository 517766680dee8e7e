"""``fiber-fast demo``: synthetic data -> coarse -> fine -> OSCAR training under DeepSpeed -> evaluation, table,
pictures.

The README's main job (``make demo``). Every step is a real entry point of the project:

1. ``fiber-fast data synth`` writes images of coloured shapes, captions, boxes with phrase spans and a BPE
   tokenizer (``--data`` points the demo at an existing data root of the same layout instead).
2. The untrained model (the fine run's model at its initialisation, as the trainer seeds it) is evaluated.
3. ``fiber-fast train --stage coarse`` (ITC + ITM + MLM) on ``--ranks`` processes under ``torchrun`` with
   the DeepSpeed JSON (gloo on CPUs); retrieval is evaluated. Grounding "after coarse" is the fine model
   initialised from the coarse weights (what ``--init`` starts the fine run from: the head is untrained).
4. ``fiber-fast train --stage fine --init COARSE`` (FPN + ATSS head); retrieval and grounding are evaluated.
5. OSCAR (issue 17): ``fiber-fast oscar extract`` tags the first ``--oscar-train-images`` train and
   ``--oscar-val-images`` val images with the fine model (regions, RoIAlign features, phrase tags) into
   ``OUT/oscar_data`` (those images' captions, their region folders, the tokenizer); ``fiber-fast train --model
   oscar`` pre-trains the tiny OSCAR from scratch on it (masked words and tags + Oscar+'s 3-way relation:
   matched, polluted tags, polluted caption) on the same ranks under DeepSpeed; image-text retrieval on the
   val images scores every (image, caption) pair with the relation head's matched probability
   (``eval.oscar_retrieval``).
6. ``OUT/summary.json`` = ``{"chance", "untrained", "coarse", "fine"}``, each with ``i2t_r1/5/10``,
   ``t2i_r1/5/10``, ``grounding_r1/5`` in [0, 1], ``"words_blind"`` (``grounding_r1/5`` of a model that finds
   every object but ignores the words: the bar the fine model's word-region alignment must clear), and
   ``"oscar"``: its ``i2t_r*``/``t2i_r*``, ``"chance"`` (of its val images), ``num_images``, ``num_texts``;
   the table is printed; ``OUT/loss_curves.png`` (three stages),
   ``OUT/grounding_grid.png`` (fine model) and ``OUT/retrieval_example.png`` (coarse model: retrieval is the
   coarse stage's job; the fine stage moves the backbone for grounding with the ITC head frozen) are drawn.

Chance levels: retrieval, the expected recall of a random ranking (``eval.retrieval.chance_recall``);
grounding, the expected recall of a random ranking of the model's own candidates (its anchors): for a
phrase with ``m`` of the ``A`` anchors at IoU >= 0.5 with one of its boxes, ``1 - C(A - m, k) / C(A, k)``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CHECKOUT = Path(__file__).resolve().parent.parent
OSCAR_STAGE = "oscar"
OSCAR_TRAIN_IMAGES, OSCAR_VAL_IMAGES = 400, 100
METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "grounding_r1", "grounding_r5")
ROWS = ("chance", "words_blind", "untrained", "coarse", "fine")  # "words_blind": grounding only
OSCAR_ROWS = ("oscar chance", "oscar")  # printed when the summary has an "oscar" section
EPILOG = """\
real data and bigger models:
  The demo runs the project's trainer and evaluator on a synthetic set. The same commands train on real
  data: point --data at a folder of the same layout (captions_{train,val}.json in COCO-captions format,
  grounding_{train,val}.json in MDETR format, images/, and tokenizer/ holding e.g. roberta-base's tokenizer
  saved with save_pretrained), and give run configs with a bigger preset and real sizes
  (model: {preset: base-coarse} with data: {image_size: 384}; model: {preset: base-fine} with
  data: {min_sizes: [480, 512, ..., 800], max_size: 1333}):
    fiber-fast demo --data /data/vlp --coarse-config my_coarse.yaml --fine-config my_fine.yaml --out runs/demo
  On GPUs, run the stages with DeepSpeed's launcher, one process per GPU, many nodes through a hostfile:
    deepspeed --hostfile hosts --module fiber_fast train --stage coarse --config my_coarse.yaml \\
        --data /data/vlp --out runs/coarse --deepspeed configs/deepspeed/zero2.json
    deepspeed --hostfile hosts --module fiber_fast train --stage fine --config my_fine.yaml \\
        --data /data/vlp --out runs/fine --deepspeed configs/deepspeed/zero2.json --init runs/coarse
    fiber-fast eval --task grounding --checkpoint runs/fine --data /data/vlp
  OSCAR on real data: region folders from Oscar/VinVL releases (or `fiber-fast oscar extract`) as
  regions_{train,val}/ beside captions_{train,val}.json, and a run config with model: {preset: base}:
    deepspeed --module fiber_fast train --model oscar --config my_oscar.yaml --data /data/oscar --out runs/oscar \\
        --deepspeed configs/deepspeed/zero2.json
    fiber-fast eval --model oscar --task retrieval --checkpoint runs/oscar --data /data/oscar --max-images 1000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    parser.add_argument("--data", metavar="DIR",
                        help="an existing data root (default: write the synthetic set to OUT/data)")
    parser.add_argument("--images", type=int, default=1200, metavar="N", help="synthetic images (default 1200)")
    parser.add_argument("--coarse-config", default=str(CHECKOUT / "configs/demo/coarse.yaml"), metavar="FILE",
                        help="run YAML of the coarse stage (default: configs/demo/coarse.yaml)")
    parser.add_argument("--fine-config", default=str(CHECKOUT / "configs/demo/fine.yaml"), metavar="FILE",
                        help="run YAML of the fine stage (default: configs/demo/fine.yaml)")
    parser.add_argument("--deepspeed", default=str(CHECKOUT / "configs/deepspeed/zero2.json"), metavar="FILE",
                        help="DeepSpeed JSON of both stages (default: configs/deepspeed/zero2.json)")
    parser.add_argument("--ranks", type=int, default=2, metavar="N", help="training processes (default 2)")
    parser.add_argument("--coarse-steps", type=int, metavar="N", help="override the coarse config's max_steps")
    parser.add_argument("--fine-steps", type=int, metavar="N", help="override the fine config's max_steps")
    parser.add_argument("--oscar-config", default=str(CHECKOUT / "configs/demo/oscar.yaml"), metavar="FILE",
                        help="run YAML of the OSCAR stage (default: configs/demo/oscar.yaml)")
    parser.add_argument("--oscar-steps", type=int, metavar="N", help="override the OSCAR config's max_steps")
    parser.add_argument("--oscar-train-images", type=int, default=OSCAR_TRAIN_IMAGES, metavar="N",
                        help=f"train images the fine model tags for OSCAR (default {OSCAR_TRAIN_IMAGES}; 0 = all)")
    parser.add_argument("--oscar-val-images", type=int, default=OSCAR_VAL_IMAGES, metavar="N",
                        help=f"val images of the OSCAR retrieval, every image-caption pair scored (default "
                        f"{OSCAR_VAL_IMAGES}; 0 = all)")


_STARTED = time.perf_counter()


def _announce(message: str) -> None:
    print(f"\n== fiber-fast demo [{time.perf_counter() - _STARTED:.0f} s]: {message}", flush=True)


PROGRESS_EVERY_S = 15.0
NOISE = ("[rank", "[20", "W1", "I1", "  warnings.warn", "  return ")  # launcher and library chatter: log only


def _run(command: Sequence[str], log: Path) -> None:
    """Run ``command`` with its output on the terminal and in ``log``; raise naming the log on failure.

    A progress bar's redraws reach the terminal at most every ``PROGRESS_EVERY_S`` seconds (and at 100%).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    last_progress = 0.0
    with open(log, "w", encoding="utf-8") as sink, subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            if not line.strip() or line.startswith(NOISE) or "Warning" in line:
                continue
            if "it/s" in line or "s/it" in line:  # a tqdm redraw
                now = time.perf_counter()
                if now - last_progress < PROGRESS_EVERY_S and "100%" not in line:
                    continue
                last_progress = now
            print(line, end="", flush=True)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited with {code}; its output is in {log}")


def train_command(stage: str, config: str, data: Path, run_dir: Path, deepspeed: str, ranks: int,
                  max_steps: int | None, init: Path | None = None) -> list[str]:
    """``torchrun --nproc_per_node RANKS -m fiber_fast train ...`` for one stage (``"oscar"``: ``--model oscar``)."""
    which = ["--model", "oscar"] if stage == OSCAR_STAGE else ["--stage", stage]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "fiber_fast", "train", *which, "--config", config, "--data", str(data),
               "--out", str(run_dir), "--deepspeed", deepspeed]
    command += ["--max-steps", str(max_steps)] if max_steps else []
    return command + (["--init", str(init)] if init else [])


class Evaluator:
    """Evaluates models of the fine config on the val split: retrieval at the coarse stage's image size,
    grounding at the fine stage's largest shorter side."""

    def __init__(self, data: Path, coarse_config: str, fine_config: str) -> None:
        from fiber_fast.data import load_tokenizer
        from fiber_fast.train.config import load_config

        self.data = data
        self.coarse, self.fine = load_config(coarse_config, "coarse"), load_config(fine_config, "fine")
        self.tokenizer = load_tokenizer(data / "tokenizer")

    def fine_model(self, init_state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """The fine run's model at its initialisation (seeded as the trainer seeds it), with ``init_state``
        copied in where names and shapes match (``--init``)."""
        from fiber_fast.train.checkpoint import load_shared_weights
        from fiber_fast.train.engine import seed_everything
        from fiber_fast.train.trainer import build_task

        seed_everything(self.fine.seed)
        model = build_task(self.fine, self.tokenizer).model
        if init_state is not None:
            load_shared_weights(model, init_state)
        return model.eval()

    def loader(self, task: str, batch_size: int) -> Any:
        from fiber_fast.eval.loading import eval_loader

        max_text_len = int(self.fine.data.get("max_text_len", 256))
        if task == "retrieval":
            return eval_loader(task, self.data, "val", self.tokenizer, batch_size, max_text_len,
                               image_size=int(self.coarse.data.get("image_size", 384)))
        return eval_loader(task, self.data, "val", self.tokenizer, batch_size, max_text_len,
                           min_size=int(max(self.fine.data.get("min_sizes", [800]))),
                           max_size=int(self.fine.data.get("max_size", 1333)))

    def metrics(self, model: torch.nn.Module, grounding: bool = True) -> dict[str, float]:
        from fiber_fast.eval.runner import evaluate_grounding, evaluate_retrieval

        found = evaluate_retrieval(model, self.loader("retrieval", 32), pad_token_id=self.tokenizer.pad_token_id)
        if grounding:
            found.update(evaluate_grounding(model, self.loader("grounding", 8)))
        return {key: float(found[key]) for key in METRIC_KEYS if key in found}

    def words_blind(self) -> dict[str, float]:
        """Grounding recall of a model that finds every object but ignores the words: each phrase's K best
        boxes are K of the image's true boxes at random (``eval.grounding.words_blind_hits``). The fine
        model tells phrases apart only as far as it beats this."""
        from fiber_fast.eval.grounding import phrases_from_positive_map, words_blind_hits

        rows = []
        for batch in self.loader("grounding", 8):
            for b in range(batch["box_mask"].shape[0]):
                phrases, box_phrase = phrases_from_positive_map(batch["positive_map"][b], batch["box_mask"][b])
                rows.append(words_blind_hits(batch["boxes"][b][batch["box_mask"][b]], box_phrase, phrases.shape[0]))
        table = torch.cat(rows)
        return {"grounding_r1": float(table[:, 0].mean()), "grounding_r5": float(table[:, 1].mean())}

    def chance(self, model: torch.nn.Module) -> dict[str, float]:
        """Chance levels of retrieval (random ranking) and grounding (random ranking of the anchors)."""
        from fiber_fast.data import read_coco_captions
        from fiber_fast.eval.retrieval import chance_recall

        records, _ = read_coco_captions(self.data / "captions_val.json")
        images: dict[int, int] = {}
        for record in records:
            images[record.image_id] = images.get(record.image_id, 0) + 1
        out = chance_recall(len(images), list(images.values()))
        out.update(grounding_chance(model, self.loader("grounding", 8)))
        return out


@torch.no_grad()
def grounding_chance(model: torch.nn.Module, loader: Any, ks: Sequence[int] = (1, 5),
                     iou_threshold: float = 0.5) -> dict[str, float]:
    """Expected phrase-grounding Recall@K of a random ranking of ``model``'s anchors, per phrase averaged."""
    from torchvision.ops import box_iou

    from fiber_fast.eval.grounding import phrases_from_positive_map, random_pick_hits

    totals = torch.zeros(len(ks), dtype=torch.float64)
    phrases_seen = 0
    anchors_of: dict[tuple[int, ...], torch.Tensor] = {}  # the anchors depend on the padded input size only
    for batch in loader:
        size = tuple(batch["pixel_values"].shape[-2:])
        if size not in anchors_of:
            first = {key: batch[key][:1] for key in ("pixel_values", "input_ids", "attention_mask")}
            out = model(first["pixel_values"], first["input_ids"], first["attention_mask"], fusion=True)
            anchors_of[size] = model.grounding_head(out).anchors.float()
        anchors = anchors_of[size]
        for b in range(batch["pixel_values"].shape[0]):
            phrases, box_phrase = phrases_from_positive_map(batch["positive_map"][b], batch["box_mask"][b])
            iou = box_iou(anchors, batch["boxes"][b][batch["box_mask"][b]].float())  # (A, G)
            totals += random_pick_hits(iou >= iou_threshold, box_phrase, phrases.shape[0], ks).sum(dim=0)
            phrases_seen += phrases.shape[0]
    return {f"grounding_r{k}": float(totals[j] / max(phrases_seen, 1)) for j, k in enumerate(ks)}


def first_images(source: Path, dest: Path, count: int) -> int:
    """Write ``dest``: the COCO-captions or MDETR JSON ``source`` restricted to its first ``count`` images (by the
    original image id, ``original_img_id`` else ``id``; 0 = all) and their annotations; returns the images kept."""
    payload = json.loads(source.read_text(encoding="utf-8"))
    original = {image["id"]: image.get("original_img_id", image["id"]) for image in payload["images"]}
    chosen = set(sorted(set(original.values()))[:count or None])
    images = [image for image in payload["images"] if original[image["id"]] in chosen]
    annotations = [a for a in payload["annotations"] if original.get(a["image_id"]) in chosen]
    dest.write_text(json.dumps({**payload, "images": images, "annotations": annotations}), encoding="utf-8")
    return len(chosen)


def oscar_stage(args: argparse.Namespace, data: Path, fine_run: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """Tag the first train/val images with the fine model, pre-train OSCAR on them, evaluate its retrieval on the
    val images. Returns the OSCAR run folder and the summary's ``"oscar"`` section."""
    import shutil

    from fiber_fast.eval.oscar_retrieval import evaluate_run

    oscar_data = out / "oscar_data"
    oscar_data.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data / "tokenizer", oscar_data / "tokenizer", dirs_exist_ok=True)
    for split, count in (("train", args.oscar_train_images), ("val", args.oscar_val_images)):
        kept = first_images(data / f"captions_{split}.json", oscar_data / f"captions_{split}.json", count)
        first_images(data / f"grounding_{split}.json", oscar_data / f"grounding_{split}.json", count)
        _announce(f"OSCAR stage: the fine model tags {kept} {split} images (fiber-fast oscar extract)")
        _run([sys.executable, "-m", "fiber_fast", "oscar", "extract", "--model", str(fine_run), "--data", str(data),
              "--annotations", str(oscar_data / f"grounding_{split}.json"), "--split", split, "--out",
              str(oscar_data / f"regions_{split}"), "--no-progress"], out / "logs" / f"extract_{split}.log")
    _announce(f"OSCAR stage: masked words and tags + polluted tags/captions, from scratch, on {args.ranks} ranks")
    oscar_run = out / "oscar"
    _run(train_command(OSCAR_STAGE, args.oscar_config, oscar_data, oscar_run, args.deepspeed, args.ranks,
                       args.oscar_steps), out / "logs" / "oscar.log")
    _announce("evaluating OSCAR retrieval: every val image-caption pair scored by the relation head")
    found = evaluate_run(oscar_run, oscar_data / "captions_val.json", oscar_data / "regions_val",
                         oscar_data / "tokenizer")
    section: dict[str, Any] = {key: float(found[key]) for key in METRIC_KEYS if key in found}
    section["chance"] = {key: float(found[f"chance_{key}"]) for key in METRIC_KEYS if f"chance_{key}" in found}
    section.update(num_images=int(found["num_images"]), num_texts=int(found["num_texts"]))
    return oscar_run, section


def format_table(summary: dict[str, Any]) -> str:
    """The demo's table: one row per model state, recall in percent ("-": not measured for that model); with an
    ``"oscar"`` section also its chance level (its val images) and its retrieval."""
    rows = [(row, summary[row]) for row in ROWS if row in summary]
    if "oscar" in summary:
        rows += list(zip(OSCAR_ROWS, (summary["oscar"]["chance"], summary["oscar"]), strict=True))
    header = f"{'':<13}" + "".join(f"{key:>14}" for key in METRIC_KEYS)
    lines = [header, "-" * len(header)]
    for name, values in rows:
        lines.append(f"{name:<13}" + "".join(f"{100 * values[key]:>13.1f}%" if key in values else f"{'-':>14}"
                                             for key in METRIC_KEYS))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0, or 1 with the failing step's log named."""
    from fiber_fast.demo_pictures import draw_grounding_grid, draw_loss_curves, draw_retrieval_example
    from fiber_fast.train.checkpoint import read_init_state

    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else out / "data"
    try:
        if not args.data:
            _announce(f"writing the synthetic set ({args.images} images) to {data}")
            _run([sys.executable, "-m", "fiber_fast", "data", "synth", "--out", str(data), "--images",
                  str(args.images)], out / "logs" / "synth.log")
        evaluator = Evaluator(data, args.coarse_config, args.fine_config)
        _announce("evaluating the untrained model")
        untrained = evaluator.fine_model()
        summary = {"chance": evaluator.chance(untrained), "words_blind": evaluator.words_blind(),
                   "untrained": evaluator.metrics(untrained)}

        _announce(f"coarse stage: ITC + ITM + MLM on {args.ranks} ranks under DeepSpeed ({args.deepspeed})")
        coarse_run = out / "coarse"
        _run(train_command("coarse", args.coarse_config, data, coarse_run, args.deepspeed, args.ranks,
                           args.coarse_steps), out / "logs" / "coarse.log")
        _announce("evaluating after the coarse stage")
        after_coarse = evaluator.fine_model(read_init_state(coarse_run))
        summary["coarse"] = evaluator.metrics(after_coarse)

        _announce("fine stage: FPN + ATSS grounding head, initialised from the coarse run")
        fine_run = out / "fine"
        _run(train_command("fine", args.fine_config, data, fine_run, args.deepspeed, args.ranks, args.fine_steps,
                           init=coarse_run), out / "logs" / "fine.log")
        _announce("evaluating after the fine stage")
        fine_model = evaluator.fine_model(read_init_state(fine_run))
        summary["fine"] = evaluator.metrics(fine_model)

        oscar_run, summary["oscar"] = oscar_stage(args, data, fine_run, out)
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        print(f"fiber-fast demo: {error}", file=sys.stderr)
        return 1

    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    pictures = [draw_loss_curves([run / "metrics.jsonl" for run in (coarse_run, fine_run, oscar_run)],
                                 ["coarse", "fine", "oscar"], out / "loss_curves.png"),
                draw_grounding_grid(fine_model, evaluator.loader("grounding", 8), evaluator.tokenizer,
                                    out / "grounding_grid.png"),
                draw_retrieval_example(after_coarse, evaluator.loader("retrieval", 32), evaluator.tokenizer,
                                       out / "retrieval_example.png", title="after the coarse stage")]
    print("\n" + format_table(summary))
    print(f"\nRecall in percent on the val split ({data}); chance = a random ranking. OSCAR: its "
          f"{summary['oscar']['num_images']} val images / {summary['oscar']['num_texts']} captions, every pair scored. "
          f"summary: {out / 'summary.json'}")
    print("pictures: " + ", ".join(str(path) for path in pictures))
    print(f"fiber-fast demo: done in {time.perf_counter() - started:.0f} s")
    return 0
