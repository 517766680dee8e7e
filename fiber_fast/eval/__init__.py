"""Evaluation of FIBER models.

- ``retrieval``: Recall@K both ways from dual-encoder embeddings (blocked top-k), fusion re-rank of the top k,
  the chance level.
- ``grounding``: ATSS head decoding (GLIP's post-processor) and phrase-grounding Recall@K (any-box protocol).
- ``detection``: category prompts and COCO mAP through pycocotools.
- ``runner``: the metrics of a ``FiberModel`` over a DataLoader, sharded over ranks (``distributed``).
- ``eval_cli``: ``fiber-fast eval --task retrieval|grounding|detection --checkpoint RUN_OR_CKPT --data DIR``.
"""
