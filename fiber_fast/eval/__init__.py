"""Evaluation: retrieval Recall@K (dual encoder, fusion re-rank), phrase grounding Recall@K, COCO detection mAP."""
