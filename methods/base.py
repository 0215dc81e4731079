"""The strategy every pretrained-model method builds on: an Avalanche ``SupervisedTemplate`` with a growing head.

Training loop (Avalanche's, with our hooks marked ``*``)::

    strategy.train(experience t)
    |-- _before_training_exp
    |     |-- head.grow(classes seen so far)          old rows copied, new rows as ``head_init`` says
    |     |-- * setup_task(t, experience)             method: add a LoRA direction, grow a prompt pool, ...
    |     |-- make_train_dataloader
    |     '-- make_optimizer                          fresh optimizer + scheduler over trainable_parameters()
    |                                                 (* optimizer_groups: lr factors, * epoch_lr_factor: schedule)
    |-- for epoch in range(epochs_t):                 init_epochs for t = 0, else epochs
    |     |-- for minibatch:
    |     |     forward (fp32; bf16 autocast only with amp: bf16) -> criterion (old-class logits masked for t > 0)
    |     |     -> backward -> (clip) -> optimizer.step -> * after_step
    |     '-- scheduler.step()                        once per epoch (MultiStepLR / cosine / constant)
    '-- _after_training_exp -> * finish_task(t)       freeze, fold, merge, store statistics ...
    strategy.eval(test_stream[:t+1])                  * before_evaluation / after_evaluation around it
                                                      pooled over all seen classes, argmax over every head row

The loss after the first task is ``CE(logits[:, K_old:], y - K_old)`` (docs/sdlora.md section 5), so old head
rows get no gradient; ``mask_old_logits=False`` trains on all logits instead.

A method is one file: a frozen config dataclass (subclass of :class:`MethodConfig`, or of
:class:`TrainingFreeConfig` for a method that trains nothing) and a strategy class (subclass of
:class:`CILStrategy`, whose ``model.head`` is a :class:`GrowingHead`) registered with
``@METHODS.register("name", Config)``. The contract tests (tests/test_method_contract.py) run every registered
method, a stopped-and-resumed job included (docs/adding_a_method.md).
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from core.config import Config, check
from core.registry import Registry

GROUPS = ("method", "ablation", "reference")


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of the system knows about a method; given at registration
    (``@METHODS.register("name", Config, info=MethodInfo(...))``).

    Tables and legends list ``method`` rows by ``order`` (then undeclared ones alphabetically), ``reference`` rows
    (upper bounds such as joint training) last, below a rule, and dashed in figures; ``ablation`` rows form the
    ablation table in ``order`` and sort alphabetically elsewhere.
    """

    display: str = ""  # human name (``--list``)
    group: str = "method"  # one of GROUPS
    order: int | None = None  # row position within the group; None: alphabetical after the ordered ones
    color: str | None = None  # hex colour in every figure; None: derived from the name (analysis/figures.py)
    train_cost: float = 1.0  # training cost per image relative to a frozen ViT with adapters (runner/cost.py)
    eval_cost: float = 1.0  # inference cost per image, relative (2.0: two ViT passes, as the prompt methods)
    trains_on_all_seen: bool = False  # task t trains on every task's data so far (joint), for the cost model
    paper_key: str | None = None  # the method's name in results/reference/paper_results.csv (None: not reported)
    released_of: str | None = None  # this row reproduces method ``released_of`` as its authors' code ran it
    # (tables label it "(as released)" beside the fair-protocol row of that name; docs/baselines.md)
    identity_order: bool = False  # its jobs use the identity class order (benchmark order_seed -1), as ``shuffle: false``
    seeds: tuple[int, ...] | None = None  # its jobs run these seeds, not the suite's (runner/suite.py expand_jobs)

    def __post_init__(self) -> None:
        check(self.group in GROUPS, f"MethodInfo.group must be one of {', '.join(GROUPS)}, got {self.group!r}")


def derived_info(name: str) -> MethodInfo:
    """The info of a method registered without one (a plugin) or resolved on demand: its name, defaults."""
    return MethodInfo(display=name)


METHODS: Registry = Registry("method", derived_info)

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_MODES = ("none", "bf16")
HEAD_INITS = ("kaiming", "linear", "trunc_normal")  # new head rows: see init_head_rows
SCHEDULERS = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class MethodConfig(Config):
    """Training fields shared by every method (the per-method dataclasses add their own).

    Task 0 may use its own schedule (``init_*``; None means "same as the later tasks"), as in PILOT-style
    configs. ``lr`` is the learning rate actually used: no implicit scaling by batch size or GPU count.

    ``TRAINING_FREE`` (a class attribute; subclass :class:`TrainingFreeConfig` to set it) marks a method that
    trains nothing: its ``TRAINING_FIELDS`` must stay 0 and a suite's ``defaults`` never set them
    (:func:`runner.suite.suite_defaults_for`), so no suite entry has to repeat ``epochs: 0``.
    """

    TRAINING_FREE: ClassVar[bool] = False
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = ("epochs", "init_epochs")

    preset: str | None = None
    epochs: int = 2
    init_epochs: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.01
    init_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    head_init: str = "kaiming"  # new head rows (HEAD_INITS, init_head_rows); each method's reference, docs/baselines.md
    scheduler: str = "constant"
    milestones: tuple[int, ...] = ()
    init_milestones: tuple[int, ...] | None = None
    lr_decay: float = 0.1
    min_lr: float = 0.0
    grad_clip: float | None = None
    mask_old_logits: bool = True
    amp: Literal["none", "bf16"] = "none"
    num_workers: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 0 and (self.init_epochs is None or self.init_epochs >= 0), "epochs must be >= 0")
        check(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch_size must be >= 1")
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check(self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        check(self.lr > 0 and (self.init_lr is None or self.init_lr > 0), f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0 and self.momentum >= 0, "weight_decay and momentum must be >= 0")
        check(0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or null")
        check(isinstance(self.amp, str) and self.amp in AMP_MODES,
              f"amp must be 'none' (fp32, the default) or 'bf16' (bf16 autocast), got {self.amp!r}")
        check(self.head_init in HEAD_INITS, f"head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        set_fields = [f for f in self.TRAINING_FIELDS if getattr(self, f)]
        check(not (self.TRAINING_FREE and set_fields), "this method trains nothing (training-free, epochs: 0): "
              f"remove {', '.join(set_fields)} from its suite entry and overrides")

    def check_benchmark(self, benchmark_cfg) -> None:
        """Raise a :class:`UserError` when this config cannot run on ``benchmark_cfg`` (e.g. too few prompts for
        its tasks); called for every (method, benchmark) pair of a suite before anything runs. Default: no limit."""

    def for_task(self, t: int) -> tuple[float, int, tuple[int, ...]]:
        """(lr, epochs, milestones) of task t."""
        if t == 0:
            return (self.init_lr or self.lr, self.epochs if self.init_epochs is None else self.init_epochs,
                    self.milestones if self.init_milestones is None else self.init_milestones)
        return self.lr, self.epochs, self.milestones


def legacy_amp(value: Any, device: str | None) -> Any:
    """``amp`` of a record written when it was a boolean: ``true`` meant bf16 autocast on CUDA only (so ``none`` for
    a job that ran on another device), ``false`` fp32; a named mode is returned as it is."""
    if isinstance(value, bool):
        return "bf16" if value and str(device or "").startswith("cuda") else "none"
    return value


@contextlib.contextmanager
def fp32() -> Iterator[None]:
    """Autocast off inside (CPU, and CUDA when present): what must stay float32 under ``amp: bf16`` (prompt
    selection, key matching, prototypes, class statistics) runs here, on inputs cast with ``.float()``."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


@dataclass(frozen=True)
class TrainingFreeConfig(MethodConfig):
    """Base config of a method that trains nothing (prototypes, closed-form readouts): ``epochs`` is 0 by
    declaration, a suite's ``defaults: {epochs: ...}`` does not apply to it, and setting it is an error."""

    TRAINING_FREE: ClassVar[bool] = True

    epochs: int = 0


class GrowingHead(nn.Module, abc.ABC):
    """What the harness requires of ``model.head``: one output row per class seen so far.

    :class:`CILStrategy` calls ``grow`` before every task, the metrics and the checkpoint code read
    ``out_features``, and the model calls the head on the backbone's features. A custom head subclasses this
    and provides:

    * ``in_features`` (set here): the feature width it reads;
    * ``out_features``: the number of classes it scores (its rows);
    * ``grow(n_total)``: add rows up to ``n_total`` classes, keeping the existing rows; a no-op when it already
      has that many;
    * ``forward(features)``: logits ``(batch, out_features)``, column ``c`` for class ``c``.

    Every tensor that grows must be a parameter or a registered buffer of the head (so that
    :meth:`CILStrategy.checkpoint` saves it and :meth:`CILStrategy.restore` re-creates it at its saved shape).
    Its parameters count as the head's in the learnable-parameter figures (``learnable_params_excl_head``).
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features

    @property
    @abc.abstractmethod
    def out_features(self) -> int:
        """Number of classes the head scores."""

    @abc.abstractmethod
    def grow(self, n_total: int) -> None:
        """Grow to ``n_total`` classes (old rows unchanged); nothing to do if ``n_total <= out_features``."""

    @abc.abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, out_features)`` of a batch of features ``(batch, in_features)``."""


def init_head_rows(weight: torch.Tensor, bias: torch.Tensor, how: str) -> None:
    """Initialise new head rows in place (``MethodConfig.head_init``):

    * ``kaiming``: ``kaiming_uniform_(nonlinearity='linear')``, bias 0 (SD-Lora-CL ``backbone/linears.py``
      ``SimpleLinear``; docs/sdlora.md section 5);
    * ``linear``: ``nn.Linear``'s default, weight ``kaiming_uniform_(a=sqrt(5))`` and bias U(+-1/sqrt(d));
    * ``trunc_normal``: timm's ViT head, ``trunc_normal_(std=0.02)`` (cut at +-2), bias 0.
    """
    with torch.no_grad():
        if how == "kaiming":
            nn.init.kaiming_uniform_(weight, nonlinearity="linear")
            bias.zero_()
        elif how == "linear":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(weight.shape[1])
            bias.uniform_(-bound, bound)
        else:
            nn.init.trunc_normal_(weight, std=0.02, a=-2.0, b=2.0)
            bias.zero_()


class IncrementalHead(GrowingHead):
    """A linear head that grows to the classes seen so far (docs/sdlora.md section 5: old rows copied, new rows
    initialised by :func:`init_head_rows` with ``init``; :class:`CILStrategy` sets it from ``head_init``)."""

    def __init__(self, in_features: int, init: str = "kaiming"):
        super().__init__(in_features)
        self.init = init
        self.weight = nn.Parameter(torch.zeros(0, in_features))
        self.bias = nn.Parameter(torch.zeros(0))

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_total: int) -> None:
        n_old = self.out_features
        if n_total <= n_old:
            return
        new_w = torch.empty(n_total - n_old, self.in_features, device=self.weight.device)
        new_b = torch.zeros(n_total - n_old, device=self.bias.device)
        init_head_rows(new_w, new_b, self.init)
        self.weight = nn.Parameter(torch.cat([self.weight.data, new_w]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, new_b]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)


class CILModel(nn.Module):
    """Backbone (timm, ``num_classes=0``: final-norm CLS feature) followed by the incremental head."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = IncrementalHead(backbone.num_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CILStrategy(SupervisedTemplate):
    """Base strategy of the pretrained-model methods (see the module docstring for the loop).

    Subclasses override the ``*`` hooks: :meth:`build_model`, :meth:`setup_task`, :meth:`trainable_parameters`,
    :meth:`after_step`, :meth:`finish_task`, :meth:`before_evaluation`, :meth:`after_evaluation`,
    :meth:`mechanism` and :meth:`stored_features`; the optimizer is built once per task from
    :meth:`optimizer_groups` (per-group lr factors) and :meth:`epoch_lr_factor` (a schedule replacing ``scheduler``).
    """

    config: MethodConfig

    def __init__(self, *, cfg: MethodConfig, backbone: nn.Module, device: torch.device | str = "cpu",
                 plugins: list | None = None, evaluator: Any = None):
        self.config = cfg
        self.history: dict = {}  # mechanism series (see mechanism()); build_model may replace it
        model = self.build_model(backbone)
        if not isinstance(getattr(model, "head", None), GrowingHead):
            raise TypeError(f"{type(self).__name__}.build_model must return a model whose .head is a "
                            "methods.base.GrowingHead (see docs/adding_a_method.md)")
        for module in model.modules():  # every incremental head of the model (HiDe's TII head too)
            if isinstance(module, IncrementalHead):
                module.init = cfg.head_init
        # Avalanche requires an optimizer at construction; the real one is built per experience in
        # make_optimizer (docs/baselines.md section 12.1: its default would add every model parameter).
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        kwargs = {"evaluator": evaluator} if evaluator is not None else {}
        super().__init__(model=model, optimizer=placeholder, criterion=nn.CrossEntropyLoss(),
                         train_mb_size=cfg.batch_size, train_epochs=max(cfg.epochs, 1),
                         eval_mb_size=cfg.eval_batch_size, device=device, plugins=plugins or [], **kwargs)
        self.task_id = -1
        self.known = 0  # classes seen before the current task
        self.seen = 0  # classes seen including the current task
        self.scheduler = None
        self._optimizer_task = None
        self.global_step = 0
        self.learnable_per_task: list[tuple[int, int]] = []  # (with head, without head) when each task started
        self.trained_names: list[str] = []  # parameter names the current task's optimizer trains


    # ------------------------------------------------------------------ hooks for methods
    def build_model(self, backbone: nn.Module) -> nn.Module:
        """Wrap the backbone; the default freezes it entirely."""
        backbone.requires_grad_(False)
        return CILModel(backbone)

    def setup_task(self, t: int, experience) -> None:
        """Called before training task t, after the head has grown."""

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimizer trains in the current task (default: every parameter with requires_grad)."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to record a mechanism trace)."""

    def finish_task(self, t: int) -> None:
        """Called after training task t."""

    def before_evaluation(self) -> None:
        """Called before each evaluation (e.g. merge adapters into the weights)."""

    def after_evaluation(self) -> None:
        """Called after each evaluation."""

    def mechanism(self) -> dict:
        """Method-specific series stored in the result record (``mechanism``): ``self.history``, which methods
        fill as they train (it is checkpointed with the rest of the state)."""
        return self.history

    def stored_features(self) -> int:
        """Floats kept besides parameters (prototypes, bases): the 'stored features' of Table 5."""
        return 0

    def resume_experiences(self, experiences: list) -> None:
        """A job resumed after task ``len(experiences)`` hands back the experiences it finished, for a method that
        keeps earlier experiences' data by reference (e.g. joint); the default keeps nothing."""

    # ------------------------------------------------------------------ Avalanche plumbing
    def _before_training_exp(self, **kwargs):
        classes = sorted(self.experience.classes_in_this_experience)
        self.task_id += 1
        self.known = self.seen
        self.seen = max(self.seen, classes[-1] + 1)
        self.model.head.grow(self.seen)
        self.model.to(self.device)
        self.setup_task(self.task_id, self.experience)
        self.model.to(self.device)
        _, epochs, _ = self.config.for_task(self.task_id)
        self.train_epochs = epochs
        super()._before_training_exp(**kwargs)

    def optimizer_groups(self, params: list[nn.Parameter]) -> list[tuple[list[nn.Parameter], float]]:
        """Optimizer hook: ``(parameters, lr factor)`` groups of the task's optimizer, given the deduplicated
        ``trainable_parameters()`` (default: one group at the task's lr)."""
        return [(params, 1.0)]

    def epoch_lr_factor(self, epochs: int) -> Callable[[int], float] | None:
        """Optimizer hook: a per-epoch lr factor that replaces the config's ``scheduler`` (None: the scheduler)."""
        return None

    def make_optimizer(self, **kwargs):
        if self._optimizer_task == self.task_id:  # Avalanche calls this more than once per experience
            return
        self._optimizer_task = self.task_id
        cfg = self.config
        lr, epochs, milestones = cfg.for_task(self.task_id)
        params = list({id(p): p for p in self.trainable_parameters() if p.requires_grad}.values())
        self.learnable_per_task.append(self.count_learnable(params))
        ids = {id(p) for p in params}
        self.trained_names = sorted(n for n, p in self.model.named_parameters() if id(p) in ids)
        if params:
            groups = [{"params": p, "lr": lr * f} for p, f in self.optimizer_groups(params) if p]
        else:  # nothing to train (e.g. a prototype method): keep a no-op optimizer
            groups = [{"params": [nn.Parameter(torch.zeros(1, device=self.device))], "lr": lr}]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        factor = self.epoch_lr_factor(epochs)
        if factor is not None:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        elif cfg.scheduler == "multistep" and milestones:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(milestones), cfg.lr_decay)
        elif cfg.scheduler == "cosine" and epochs > 0:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, epochs, eta_min=cfg.min_lr)
        else:
            self.scheduler = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the strategy's device under ``amp: bf16`` (the forward and methods' extra passes)."""
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self):
        if self.config.amp == "bf16":
            with self.autocast():
                return self.model(self.mb_x).float()
        return self.model(self.mb_x)

    def loss_classes(self) -> tuple[int, int]:
        """[lo, hi): the head rows the training loss sees now (after task 1 only the new ones, unless
        ``mask_old_logits`` is off); progress lines report training accuracy over these rows."""
        if self.is_training and self.config.mask_old_logits and self.known > 0:
            return self.known, self.seen
        return 0, self.seen

    def criterion(self):
        lo, hi = self.loss_classes()
        return F.cross_entropy(self.mb_output[:, lo:hi], self.mb_y - lo)

    def optimizer_step(self):
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.config.grad_clip)
        super().optimizer_step()
        self.global_step += 1
        self.after_step()

    def _after_training_epoch(self, **kwargs):
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    def _after_training_exp(self, **kwargs):
        self.finish_task(self.task_id)
        super()._after_training_exp(**kwargs)

    def _before_eval(self, **kwargs):
        self.before_evaluation()
        super()._before_eval(**kwargs)

    def _after_eval(self, **kwargs):
        super()._after_eval(**kwargs)
        self.after_evaluation()

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state needed to continue (subclasses extend it)."""
        return {"task_id": self.task_id, "known": self.known, "seen": self.seen, "global_step": self.global_step,
                "learnable_per_task": self.learnable_per_task, "history": self.history}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.task_id, self.known, self.seen = state["task_id"], state["known"], state["seen"]
        self.global_step = state["global_step"]
        self.learnable_per_task = [tuple(x) for x in state["learnable_per_task"]]
        self.history = state.get("history", {})

    def checkpoint(self) -> dict[str, Any]:
        """The model's state without the frozen pretrained weights (the backbone file holds them)."""
        frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad and n.startswith("backbone.")}
        tensors = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k not in frozen}
        return {"tensors": tensors, "extra": self.extra_state()}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load a :meth:`checkpoint` into a freshly built strategy (same config and backbone).

        Tensors that grow over tasks (head rows, stacked directions, prompt pools) are re-created at the
        checkpoint's shapes first, so no method needs its own loader.
        """
        tensors = checkpoint["tensors"]
        for name, value in tensors.items():
            module_name, _, attr = name.rpartition(".")
            module = self.model.get_submodule(module_name) if module_name else self.model
            current = getattr(module, attr, None)
            if current is None or tuple(current.shape) != tuple(value.shape):
                fresh = torch.empty_like(value, device=self.device)
                if attr in module._buffers:
                    module._buffers[attr] = fresh
                else:
                    requires_grad = current.requires_grad if isinstance(current, nn.Parameter) else True
                    setattr(module, attr, nn.Parameter(fresh, requires_grad=requires_grad))
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
        if unexpected or set(missing) - frozen:
            raise RuntimeError(f"checkpoint does not fit the model: missing {sorted(set(missing) - frozen)[:5]}, "
                               f"unexpected {unexpected[:5]}")
        self.model.to(self.device)
        self.load_extra_state(checkpoint["extra"])

    def count_learnable(self, params: list[nn.Parameter]) -> tuple[int, int]:
        """(learnable parameters, the same without the head)."""
        head = {id(p) for p in self.model.head.parameters()}
        total = sum(p.numel() for p in params)
        return total, total - sum(p.numel() for p in params if id(p) in head)


def coda_cosine(epochs: int) -> Callable[[int], float]:
    """CODA-Prompt's per-epoch lr factor as its code runs it (GT-RIPL/CODA-Prompt ``utils/schedulers.py``
    ``CosineSchedule``, stepped once per epoch by ``learners/default.py``; the same class and stepping in
    WuYichen-97/SD-Lora-CL ``models/coda_prompt.py`` and liangyanshuo/InfLoRA ``utils/schedulers.py``/
    ``methods/inflora.py``): epoch e of K runs at ``cos(99 pi max(e - 1, 0) / (200 (K - 1)))``.

    The constructor sets cos(0) and leaves its epoch counter at -1, so the first ``step()`` re-applies cos(0):
    the first two epochs run at the full rate, the last at ``cos(99 pi (K - 2) / (200 (K - 1)))``, never 0.
    Constant for K = 1 (the reference divides by zero)."""
    if epochs <= 1:
        return lambda epoch: 1.0
    return lambda epoch: math.cos(99 * math.pi * max(epoch - 1, 0) / (200 * (epochs - 1)))
