"""Downstream fine-tuning from a foundation model Θ.

Two tasks on a generated downstream set (one domain, "human" by default):

* **segmentation**: a U-Net (:func:`fedsim.models.build_segmenter`, without the decoder's
  raw-pixel branch by default) whose encoder is loaded from the foundation state dict (every
  backbone tensor; the classifier head is not part of the encoder's job), the decoder freshly
  initialised. Few-shot (``seg_train_samples`` images): the decoder first trains alone on the
  frozen encoder (``seg_warmup_steps``), then the whole U-Net (``seg_steps``, the encoder at the
  smaller ``seg_encoder_lr``). Scored on catheter / guidewire Dice, mIoU and per-image Jaccard with
  background excluded (:mod:`fedsim.metrics`). docs/downstream.md and its records have the
  measurements behind this recipe.
* **classification**: a :func:`fedsim.models.build_model` classifier with 3 classes on the
  tube-position label (normal / borderline / abnormal), every backbone tensor copied from the
  foundation, the head (``head_prefixes``) freshly initialised, the whole network fine-tuned;
  scored on accuracy.

:func:`compare_initializations` runs both tasks from several initialisations (random, FedAvg Θ,
FedEFM Θ, …) on the *same* downstream data, once per fine-tune seed (``seeds``: the decoder/head
initialisation and the batch order, shared by every row), and reports each score's mean and
standard deviation over the seeds, plus the paired difference to random initialisation — so a
reader sees how much of a difference between rows is noise. ``split="val"`` scores on a quarter of
the downstream *training* images held out (for choosing a recipe; never the test set).
Everything is deterministic for fixed seeds.

One file per job: ``data.py`` (the downstream sets), ``weights.py`` (foundation weights into the
downstream models), ``train.py`` (the fine-tuning loops), ``finetune.py`` (one fine-tune of one
task, scored), ``workers.py`` (where the fine-tunes run), ``compare.py`` (rows over
initializations and seeds), ``table.py`` (the rows as a table and as JSON).
"""

from fedsim.config.downstream import TASKS, DownstreamConfig
from fedsim.downstream.compare import compare_initializations
from fedsim.downstream.data import SPLITS, DownstreamData, image_sizes, make_downstream_data
from fedsim.downstream.finetune import finetune_classification, finetune_segmentation
from fedsim.downstream.table import downstream_table, rows_to_json
from fedsim.downstream.train import fit, fit_segmenter
from fedsim.downstream.weights import (
    init_classifier,
    init_segmenter,
    load_classifier_backbone,
    load_foundation_file,
)
from fedsim.downstream.workers import usable_cpus

__all__ = [
    "DownstreamConfig", "DownstreamData", "SPLITS", "TASKS", "compare_initializations", "downstream_table",
    "finetune_classification", "finetune_segmentation", "init_classifier", "init_segmenter",
    "fit", "fit_segmenter", "load_classifier_backbone", "load_foundation_file", "make_downstream_data",
    "image_sizes", "rows_to_json", "usable_cpus",
]
