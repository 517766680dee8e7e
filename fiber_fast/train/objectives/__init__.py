"""Training objectives as functions on tensors: coarse (ITC, ITM, MLM), fine (ATSS grounding), OSCAR (relation)."""

from .flops import PassCosts, fiber_step_flops, flops_saved, measure_pass_costs, shared_step_flops
from .grounding import GroundingTargets, grounding_losses, grounding_targets
from .itc import itc_loss
from .itm import ItmPairs, itm_loss, negative_weights, sample_itm_pairs
from .mlm import IGNORE_INDEX, mask_tokens, mlm_loss
from .oscar import matched_probability, relation_loss
from .queue import EmbeddingQueue

__all__ = ["EmbeddingQueue", "GroundingTargets", "IGNORE_INDEX", "ItmPairs", "PassCosts", "fiber_step_flops",
           "flops_saved", "grounding_losses", "grounding_targets", "itc_loss", "itm_loss", "mask_tokens",
           "matched_probability", "measure_pass_costs", "mlm_loss", "negative_weights", "relation_loss",
           "sample_itm_pairs", "shared_step_flops"]
