"""cryowarp.picking: BoxNet particle picking with artefact masking (warp-facts.md §3)."""

from cryowarp.picking.mask_edits import MaskStroke, apply_mask_strokes
from cryowarp.picking.model import N_CLASSES, PIXEL_SIZE_A, BoxNet, BoxNetConfig
from cryowarp.picking.pick import (
    Picks,
    PickSettings,
    boxnet_from_state,
    boxnet_to_state,
    load_pretrained_boxnet,
    model_blob_weight,
    pick_particles,
)
from cryowarp.picking.postprocess import PickCandidates, clean_mask, find_particles
from cryowarp.picking.preprocess import (
    highpass_and_normalize,
    predict_probabilities,
    prepare_boxnet_input,
    rescale_to_boxnet_pixel_size,
)
from cryowarp.picking.score import match_picks
from cryowarp.picking.train import (
    EpochReport,
    TrainingExample,
    TrainProgress,
    TrainResult,
    TrainSettings,
    augment_batch,
    class_weights,
    make_training_example,
    paint_certainty,
    paint_labels,
    pixel_accuracy,
    train_boxnet,
    weighted_cross_entropy,
)

__all__ = [
    "N_CLASSES",
    "PIXEL_SIZE_A",
    "BoxNet",
    "BoxNetConfig",
    "EpochReport",
    "MaskStroke",
    "PickCandidates",
    "PickSettings",
    "Picks",
    "TrainProgress",
    "TrainResult",
    "TrainSettings",
    "TrainingExample",
    "apply_mask_strokes",
    "augment_batch",
    "boxnet_from_state",
    "boxnet_to_state",
    "class_weights",
    "clean_mask",
    "find_particles",
    "highpass_and_normalize",
    "load_pretrained_boxnet",
    "make_training_example",
    "match_picks",
    "model_blob_weight",
    "paint_certainty",
    "paint_labels",
    "pick_particles",
    "pixel_accuracy",
    "predict_probabilities",
    "prepare_boxnet_input",
    "rescale_to_boxnet_pixel_size",
    "train_boxnet",
    "weighted_cross_entropy",
]
