"""Avalanche's own strategies in the harness: ``method: "avalanche:EWC"`` (any ``SupervisedTemplate`` subclass).

A suite names a strategy of ``avalanche.training`` with its keyword arguments::

    ewc: {method: "avalanche:EWC", ewc_lambda: 100}
    lwf: {method: "avalanche:LwF", alpha: 1.0, temperature: 2.0}

Design. Avalanche implements the classic regularisers as **plugins added by the strategy's constructor**
(``EWC.__init__`` appends an ``EWCPlugin``, ``LwF.__init__`` an ``LwFPlugin``, ``Naive`` adds none), and a few
strategies as overridden template methods (``Cumulative.train_dataset_adaptation``). So the resolved method is the
class ``AvalancheEWC(AvalancheStrategy, _ForwardAvalancheKwargs, EWC)``, whose method resolution order is::

    AvalancheEWC -> AvalancheStrategy -> CILStrategy -> _ForwardAvalancheKwargs -> EWC -> SupervisedTemplate

* ``CILStrategy`` (first) gives what every method of the harness shares: the growing head, the per-task
  optimizer over ``trainable_parameters()``, the loss, schedulers, checkpoints, metrics;
* ``CILStrategy.__init__`` calls ``super().__init__(model=..., optimizer=..., ...)``, which reaches
  ``_ForwardAvalancheKwargs``: it adds the config's Avalanche keyword arguments and calls ``EWC.__init__``, which
  builds its plugin exactly as Avalanche does and hands everything to ``SupervisedTemplate``;
* hooks ``CILStrategy`` extends with ``super()`` (``_before_training_exp``, ``_after_training_exp``, ...) still run
  the Avalanche class's versions, and methods only the Avalanche class overrides keep working.

So the regulariser is Avalanche's code, not a re-implementation. ``criterion`` passed to Avalanche is
``nn.CrossEntropyLoss()``: plugins that call ``strategy._criterion`` themselves (EWC's Fisher pass) use plain CE
over all seen logits, as in Avalanche. The training loss is Avalanche's too: ``mask_old_logits`` defaults to false
for every ``avalanche:<Name>`` config, so ``CILStrategy.criterion`` is CE over all seen logits, as Avalanche's
``EWC`` and ``LwF`` train. Old-logit masking (the loss of the harness's own methods, docs/sdlora.md section 5) is
an explicit option with its own rows: ``ewc_masked`` and ``lwf_masked`` (:data:`MASKED`; ``mask_old_logits: true``
on ``avalanche:EWC``/``avalanche:LwF``). Plugins add to ``strategy.loss`` in ``before_backward``.

Config. ``avalanche:EWC`` gets a frozen dataclass generated from ``EWC.__init__``: every keyword argument whose
default is a plain YAML value (number, string, bool, None, tuple of those) becomes a field with that default;
arguments Avalanche requires (no default) become fields that must be set (``UserError`` otherwise); arguments with
object defaults keep Avalanche's default and are not configurable. Template plumbing (model, optimizer, criterion,
batch sizes, epochs, device, plugins, evaluator) comes from :class:`MethodConfig`; an Avalanche argument whose
name collides with a MethodConfig field is renamed ``avalanche_<name>`` (e.g. BiC's ``lr``). Unknown keys are
rejected by ``from_dict`` with the list of valid keys. ``train_backbone: true`` (default) fine-tunes the whole
backbone, as these regularisers were designed for; ``false`` freezes it (head-only).

Defaults: SGD, momentum 0.9, lr 0.01, no weight decay (``full_ft``'s recipe); head rows added per task are
initialised like ``nn.Linear`` (``head_init: linear``), as Avalanche's ``IncrementalClassifier`` grows
(``avalanche/models/dynamic_modules.py``).

Strategies that put old classes' samples into the training minibatches (Replay, Cumulative, ER_ACE, MIR) cannot
mask old logits (negative targets): ``mask_old_logits: true`` is refused for them with a ``UserError``.

Limits (deliberate): strategies that need their own model, criterion or generator, or that fight the growing head
(``UNSUPPORTED`` below, each with its reason) are refused with a ``UserError``. Run on the tiny test ViT (two
experiences): Naive, EWC, LwF, AGEM, GEM, MAS, SynapticIntelligence, Replay, Cumulative, ER_ACE, MIR and
FromScratchTraining; only Naive, EWC and LwF are covered by the contract tests.

Checkpoints hold the model and the state of the regularisers the contract covers, so that a resumed job continues
exactly: EWC's saved parameters and importances per experience, and LwF's experience count and classes seen (its
previous model is the restored model itself: checkpoints are taken at experience ends, where LwF copies it).
Other plugins' state (replay buffers, SI/MAS importances) is not saved: a restored strategy predicts identically
but a resumed job continues without that memory.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from avalanche.training.plugins import EWCPlugin, LwFPlugin
from avalanche.training.utils import ParamData
from torch import nn

from core.config import check
from core.errors import UserError
from core.registry import Entry
from methods.base import METHODS, CILModel, CILStrategy, MethodConfig, MethodInfo

PREFIX = "avalanche"
# Arguments the harness supplies itself (SupervisedTemplate plumbing).
TEMPLATE_ARGS = {"self", "model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
                 "plugins", "evaluator", "eval_every", "peval_mode"}
UNSUPPORTED = {
    "AETraining": "trains an autoencoder, not a classifier",
    "VAETraining": "trains a VAE, not a classifier",
    "GenerativeReplay": "needs a generator strategy",
    "ExpertGateStrategy": "needs Avalanche's ExpertGate model",
    "PNNStrategy": "needs Avalanche's PNN model",
    "AR1": "needs Avalanche's MobileNet with latent replay",
    "CWRStar": "needs a named consolidated-weights layer",
    "StreamingLDA": "needs its own SLDA model",
    "ICaRL": "needs its own feature extractor and classifier",
    "LearningToPrompt": "builds its own ViT and does not run on timm >= 0.9 (docs/baselines.md section 12.4); use l2p",
    "ER_AML": "needs a separate feature extractor",
    "SCR": "needs its own projection network and loss",
    "CoPE": "needs its own prototype loss on a fixed-size output",
    "JointTraining": "is not incremental; use the harness's joint method",
    "BiC": "replaces experience datasets, which Avalanche 0.6 experiences do not allow",
    "DER": "stores logits of a fixed size; the harness's head grows",
    "FeatureReplay": "needs a model with a 'classifier' layer to split",
    "LFL": "needs Avalanche's BaseModel.get_features",
    "PackNet": "needs a PackNetModule model",
    "GSS_greedy": "needs a list-valued input_size for its buffer",
    "GDumb": "resets the model to its first-experience copy, which undoes the head's growth",
}


@dataclass(frozen=True)
class AvalancheConfig(MethodConfig):
    """Base of the generated configs: MethodConfig's training fields plus ``train_backbone``.

    Attributes:
        train_backbone: fine-tune the whole backbone (default) or freeze it and train the head only.
    """

    AVALANCHE_NAME: ClassVar[str] = ""
    AVALANCHE_ARGS: ClassVar[dict[str, str]] = {}  # field name -> Avalanche keyword
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    REGISTERED_AS: ClassVar[str] = ""  # the registry name when not ``avalanche:<AVALANCHE_NAME>`` (MASKED rows)

    lr: float = 0.01
    mask_old_logits: bool = False  # Avalanche's loss: CE over all seen logits
    head_init: str = "linear"  # new rows as Avalanche's IncrementalClassifier grows (a fresh nn.Linear)
    train_backbone: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.REQUIRED:
            check(getattr(self, name) is not None,
                  f"{PREFIX}:{self.AVALANCHE_NAME} needs {name} (avalanche.training.{self.AVALANCHE_NAME} has no "
                  f"default for it); set it in the suite entry")
        for name in self.AVALANCHE_ARGS:
            value = getattr(self, name)
            if isinstance(value, list):  # YAML lists -> tuples, so that configs stay hashable
                object.__setattr__(self, name, tuple(value))

    def avalanche_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the Avalanche class's ``__init__``."""
        return {kw: getattr(self, name) for name, kw in self.AVALANCHE_ARGS.items()}

    def __reduce__(self):
        # Generated classes are not importable by name: pickle (joblib workers) rebuilds through the resolver.
        return _rebuild_config, (self.REGISTERED_AS or f"{PREFIX}:{self.AVALANCHE_NAME}", self.to_dict())


def _rebuild_config(name: str, data: dict) -> AvalancheConfig:
    return METHODS.get(name).config_cls.from_dict(data)


class AvalancheStrategy(CILStrategy):
    """The harness side of every ``avalanche:<Name>`` method (see the module docstring for the MRO)."""

    config: AvalancheConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(self.config.train_backbone)
        return CILModel(backbone)

    def extra_state(self) -> dict[str, Any]:
        plugins = {}
        for i, plugin in enumerate(self.plugins):
            if isinstance(plugin, EWCPlugin):
                plugins[str(i)] = {"saved_params": _param_tables(plugin.saved_params),
                                   "importances": _param_tables(plugin.importances)}
            elif isinstance(plugin, LwFPlugin):
                lwf = plugin.lwf
                plugins[str(i)] = {"expcount": lwf.expcount, "has_prev_model": lwf.prev_model is not None,
                                   "prev_classes_by_task": {int(t): sorted(int(c) for c in classes)
                                                            for t, classes in lwf.prev_classes_by_task.items()}}
        return {**super().extra_state(), "avalanche_plugins": plugins}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        for key, saved in state.get("avalanche_plugins", {}).items():
            plugin = self.plugins[int(key)]
            if isinstance(plugin, EWCPlugin):
                for table, values in ((plugin.saved_params, saved["saved_params"]),
                                      (plugin.importances, saved["importances"])):
                    table.clear()
                    table.update({int(exp): {name: ParamData(name, init_tensor=t.to(self.device), device=self.device)
                                             for name, t in params.items()} for exp, params in values.items()})
            elif isinstance(plugin, LwFPlugin):
                lwf = plugin.lwf
                lwf.expcount = saved["expcount"]
                lwf.prev_classes_by_task.clear()
                lwf.prev_classes_by_task.update({int(t): set(c) for t, c in saved["prev_classes_by_task"].items()})
                # LwF copies the model at the end of each experience (in training mode): the model just restored
                lwf.prev_model = copy.deepcopy(self.model).train() if saved["has_prev_model"] else None

    def criterion(self):
        if self.is_training and self.config.mask_old_logits and self.known and bool((self.mb_y < self.known).any()):
            raise UserError(f"{PREFIX}:{self.config.AVALANCHE_NAME} trains on old classes' samples: set "
                            "mask_old_logits: false")
        return super().criterion()


class _ForwardAvalancheKwargs:
    """Sits between CILStrategy and the Avalanche class: adds the config's keyword arguments to its ``__init__``."""

    def __init__(self, **template_kwargs):
        # A copy: Avalanche's constructors append their plugin to the list they are given.
        template_kwargs["plugins"] = list(template_kwargs.get("plugins") or [])
        super().__init__(**template_kwargs, **self.config.avalanche_kwargs())


def _param_tables(tables: dict) -> dict[int, dict[str, Any]]:
    """EWC's ``{experience: {name: ParamData}}`` as plain tensors (a checkpoint loads with weights_only=True)."""
    return {int(exp): {name: data.data.detach().cpu().clone() for name, data in params.items()}
            for exp, params in tables.items()}


def avalanche_classes() -> dict[str, type]:
    """Every ``SupervisedTemplate`` subclass exported by ``avalanche.training``."""
    from avalanche import training
    from avalanche.training.templates import SupervisedTemplate

    return {name: obj for name in dir(training) if inspect.isclass(obj := getattr(training, name))
            and issubclass(obj, SupervisedTemplate) and obj is not SupervisedTemplate}


def _is_plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _field_type(annotation: Any) -> Any:
    """int/float/str/bool (optionally Optional) keep their type for YAML coercion; anything else is Any."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else Any
    # typing.Optional, not ``X | None``: core.config._coerce recognises typing.Union only (YAML 100 -> 100.0)
    return typing.Optional[annotation] if annotation in (int, float, str, bool) else Any  # noqa: UP045


def make_config_class(name: str, cls: type) -> type[AvalancheConfig]:
    """A frozen dataclass with one field per configurable keyword argument of ``cls.__init__``."""
    own = set(MethodConfig.field_names()) | set(AvalancheConfig.field_names())
    fields, args, required = [], {}, []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in TEMPLATE_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not p.empty and not _is_plain(p.default):
            continue  # an object default (a transform, a model): Avalanche's default is used
        field = f"{PREFIX}_{p.name}" if p.name in own else p.name
        default = None if p.default is p.empty else p.default
        if p.default is p.empty:
            required.append(field)
        fields.append((field, _field_type(p.annotation), dataclasses.field(default=default)))
        args[field] = p.name
    namespace = {"AVALANCHE_NAME": name, "AVALANCHE_ARGS": args, "REQUIRED": tuple(required),
                 "__module__": __name__, "__doc__": f"Generated config of avalanche.training.{name} (see its docs)."}
    return dataclasses.make_dataclass(f"Avalanche{name}Config", fields, bases=(AvalancheConfig,), frozen=True,
                                      namespace=namespace)


def resolve(name: str) -> Entry:
    """The registry entry of ``avalanche:<name>`` (``METHODS.add_resolver`` calls it on first use)."""
    classes = avalanche_classes()
    if name not in classes:
        valid = ", ".join(f"{PREFIX}:{n}" for n in sorted(classes) if n not in UNSUPPORTED)
        raise UserError(f"unknown Avalanche strategy {name!r}; valid names are: {valid}")
    if name in UNSUPPORTED:
        raise UserError(f"{PREFIX}:{name} is not supported in this harness: it {UNSUPPORTED[name]}")
    cls = classes[name]
    config_cls = make_config_class(name, cls)
    first_line = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
    strategy_cls = type(f"Avalanche{name}", (AvalancheStrategy, _ForwardAvalancheKwargs, cls),
                        {"__module__": __name__, "__doc__": f"avalanche.training.{name} on the harness. {first_line}"})
    # every Avalanche strategy here fine-tunes the whole ViT: full fine-tuning's cost
    info = MethodInfo(display=f"Avalanche {name}", train_cost=1.5)
    return Entry(f"{PREFIX}:{name}", strategy_cls, config_cls, f"Avalanche's {name}: {first_line}", info)


METHODS.add_resolver(PREFIX, resolve)

# Rows that train an Avalanche strategy with the harness's old-logit-masked loss instead of Avalanche's own:
# registry name -> (Avalanche strategy, display name). Not in the quick suite.
MASKED = {"ewc_masked": ("EWC", "EWC, old logits masked"), "lwf_masked": ("LwF", "LwF, old logits masked")}


def register_masked(name: str, avalanche_name: str, display: str) -> None:
    """Register ``name``: ``avalanche:<avalanche_name>`` whose config defaults to ``mask_old_logits: true``."""
    base = resolve(avalanche_name)
    config_cls = dataclasses.make_dataclass(
        f"Avalanche{avalanche_name}MaskedConfig", [("mask_old_logits", bool, dataclasses.field(default=True))],
        bases=(base.config_cls,), frozen=True,
        namespace={"REGISTERED_AS": name, "__module__": __name__,
                   "__doc__": f"avalanche.training.{avalanche_name} trained with old-class logits masked."})
    METHODS.register(name, config_cls, doc=f"Avalanche's {avalanche_name}, trained with old-class logits masked",
                     info=MethodInfo(display=display, train_cost=base.info.train_cost))(base.obj)


for _name, (_strategy, _display) in MASKED.items():
    register_masked(_name, _strategy, _display)
