"""Joint training: the upper bound. At task t the model is trained on the data of every task seen so far.

A **reference row, not a competitor**: it stores all training data (it is not rehearsal-free, nor incremental
in any useful sense), and the analysis sets it below a rule in every table (``analysis.records.JOINT``: the
method label must stay ``joint`` for that), never ranked or bolded among the continual methods.

* Data: ``train_dataset_adaptation`` (Avalanche's data hook) concatenates the training sets of every experience
  seen so far (``AvalancheDataset.concat``, as Avalanche's ``Cumulative`` strategy does), so the loader of task t
  draws from classes ``0 .. seen-1``.
* Loss: CE over every seen class, no old-logit masking (``mask_old_logits`` must stay false: masking would drop
  the old classes' samples' targets).
* What is trained: the whole backbone and the head (``train_backbone: true``, the default), with ``full_ft``'s
  recipe (SGD, momentum 0.9, no weight decay, lr 0.01 unless a suite says otherwise); ``train_backbone: false``
  gives joint linear probing.
* ``restart: true`` (default) restarts every task from the pretrained backbone and a freshly initialised head, so
  the row after task t is true joint training on tasks 0..t and the final row is plain joint training on the whole
  benchmark for ``epochs`` epochs. ``restart: false`` warm-starts from the previous task's model (Avalanche's
  ``Cumulative``; the model then sees early tasks for more epochs than late ones). Restarting keeps one CPU copy
  of the pretrained backbone's weights.

Cost: task t trains on t+1 tasks' data, so a run costs about (N+1)/2 times a sequential one.

Mechanism record: the number of training samples and of classes in each task's (cumulative) training set.
Limit: the datasets of earlier experiences are held by reference, not checkpointed; a restored strategy predicts
identically but would continue with only the experiences it is given from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.config import check
from methods.base import METHODS, CILModel, CILStrategy, MethodConfig, MethodInfo, init_head_rows


@dataclass(frozen=True)
class JointConfig(MethodConfig):
    """Attributes:
    train_backbone: fine-tune the backbone (default) or train the head only.
    restart: start every task from the pretrained backbone and a fresh head (true joint training per row).
    """

    lr: float = 0.01
    mask_old_logits: bool = False
    train_backbone: bool = True
    restart: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not self.mask_old_logits, "joint trains on every seen class: mask_old_logits must be false")


@METHODS.register("joint", JointConfig, info=MethodInfo(display="Joint training (upper bound)", group="reference", color="#000000", train_cost=1.5, trains_on_all_seen=True))
class Joint(CILStrategy):
    """Joint training on all data seen so far (upper bound; a reference row, not ranked)."""

    config: JointConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(self.config.train_backbone)
        self._datasets: dict[int, object] = {}  # experience id -> its training set
        self._pretrained = ({k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
                            if self.config.restart and self.config.train_backbone else None)
        self.history: dict = {"train_samples": [], "train_classes": []}
        return CILModel(backbone)

    def train_dataset_adaptation(self, **kwargs):
        self._datasets[self.experience.current_experience] = self.experience.dataset
        datasets = [self._datasets[k] for k in sorted(self._datasets)]
        data = datasets[0]
        for more in datasets[1:]:
            data = data.concat(more)
        self.adapted_dataset = data.train()
        self.history["train_samples"].append(len(self.adapted_dataset))
        self.history["train_classes"].append(len({int(y) for y in self.adapted_dataset.targets}))

    def resume_experiences(self, experiences) -> None:
        """After a restart inside a job (runner/resume.py), get back the finished experiences' training sets."""
        for exp in experiences:
            self._datasets[exp.current_experience] = exp.dataset

    def setup_task(self, t: int, experience) -> None:
        if not self.config.restart or t == 0:
            return
        if self._pretrained is not None:
            self.model.backbone.load_state_dict(self._pretrained)
        head = self.model.head
        init_head_rows(head.weight, head.bias, self.config.head_init)  # as IncrementalHead.grow gives new rows

