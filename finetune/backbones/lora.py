"""LoRA with peft: adapters injected into the backbone of a native transformers model.

The adapters go into the backbone only (`base_model_of(model)`), with `peft.inject_adapter_in_model`,
by default into the attention projections its forward calls (`default_targets`), so the model stays the native class: the head, the projector and `layer_weights` are ordinary
trainable parameters (peft would neither train nor save `layer_weights`), and the Trainer's
checkpoints hold every weight, adapters included. `export_ready` merges the adapters into the
base weights, giving back a plain transformers model; `save_adapter` writes a peft adapter folder
(adapters + heads) with the model's own parameters beside it (`layer_weights`, which peft cannot
hold), and `load_adapter` reads one back.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from finetune.backbones.heads import base_model_name, base_model_of
from finetune.recipe import listed

# The model's own parameters (not in any submodule, e.g. `layer_weights`), saved beside the adapter.
OWN_PARAMETERS_FILE = "own_parameters.safetensors"


def matches(name: str, target: str) -> bool:
    """peft's rule for a `target_modules` entry: the module's dotted name is it or ends with it."""
    return name == target or name.endswith(f".{target}")


def called_linears(model: nn.Module, inputs: dict) -> set[str]:
    """Names (in the backbone) of the Linear layers a forward pass on `inputs` calls. Some attention
    modules only read their projections' weights (WavLM's F.multi_head_attention_forward): an
    adapter there would never run, nor train."""
    called = set()
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: called.add(name))
        for name, module in base_model_of(model).named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return called


def default_targets(base: nn.Module, layers: str, called: set[str], hidden_size: int) -> list[str]:
    """Default `lora.target_modules`: the called Linear layers of the transformer layers (`layers`)
    that read or write the hidden states and sit in attention modules (q_proj k_proj v_proj out_proj,
    query key value, ...; not WavLM's position gate), or, where the attention calls none (WavLM),
    the others (the feed-forward). Each is named by the shortest end of its name that names no
    other Linear layer (SEW-D: attention.output.dense, as its feed-forward has a `dense` too)."""
    linears = {name: m for name, m in base.named_modules() if isinstance(m, nn.Linear)}
    wide = {
        name
        for name, m in linears.items()
        if name in called and name.startswith(f"{layers}.") and hidden_size in (m.in_features, m.out_features)
    }
    attention = [name for name, m in base.named_modules() if "Attention" in type(m).__name__]
    chosen = {name for name in wide if any(name.startswith(f"{a}.") for a in attention)} or wide
    others = [name for name in linears if name not in chosen]
    targets = set()
    for name in chosen:
        parts = name.split(".")
        ends = (".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1))
        targets.add(next(end for end in ends if not any(matches(other, end) for other in others)))
    return sorted(targets)


def add_lora(model: nn.Module, lora, layers: str, inputs: dict) -> nn.Module:
    """Inject LoRA (rank, alpha, dropout, targets from the recipe's `lora`, by default
    `default_targets`) into the backbone, whose transformer layers are `layers`; `inputs` (the
    model's inputs for any audio) show which layers run. Only the adapters of the backbone train
    afterwards (in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    base = base_model_of(model)
    called = called_linears(model, inputs)
    targets = list(lora.target_modules or default_targets(base, layers, called, model.config.hidden_size))
    linears = [name for name, module in base.named_modules() if isinstance(module, nn.Linear)]
    missing = [t for t in targets if not any(matches(name, t) for name in linears)]
    if missing:
        raise ValueError(
            f"lora.target_modules: {', '.join(missing)} not in this backbone; its linear "
            f"layers: {listed(sorted({name.rsplit('.', 1)[-1] for name in linears}))}"
        )
    idle = [t for t in targets if not any(matches(name, t) for name in called)]
    if idle:
        raise ValueError(
            f"lora.target_modules: this backbone never calls {', '.join(idle)} (it reads their "
            f"weights directly), so adapters there would not train; it calls: "
            f"{listed(sorted({name.rsplit('.', 1)[-1] for name in called}))}"
        )
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none")
    inject_adapter_in_model(config, base)
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def replace_lora(model: nn.Module, merge: bool) -> nn.Module:
    """Put every adapted layer's plain layer back, folding the adapter in first when `merge`
    (in place)."""
    for name, layer in lora_layers(model):
        if merge:
            layer.merge()
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, layer.get_base_layer())
    for module in model.modules():
        if "peft_config" in vars(module):
            del module.peft_config
    return model


def adapter_model(model: nn.Module):
    """A peft `PeftModel` with `model`'s trained adapters and head (`modules_to_save`): its
    `save_pretrained` writes an adapter folder, loaded with `PeftModel.from_pretrained(base, folder)`
    where `base` is the backbone built for the same labels (e.g. by its builder in full mode).
    Parameters of the model itself (`layer_weights`) are not in it: see `save_adapter`."""
    from peft import LoraConfig, get_peft_model

    trained = dict(lora_layers(model))
    injected = base_model_of(model).peft_config["default"]  # rank, alpha, dropout, targets of the adapters
    base = replace_lora(copy.deepcopy(model), merge=False)
    heads = [name for name, _ in base.named_children() if name != base_model_name(base)]
    config = LoraConfig(
        r=injected.r,
        lora_alpha=injected.lora_alpha,
        lora_dropout=injected.lora_dropout,
        target_modules=sorted(injected.target_modules),
        modules_to_save=heads,
        bias="none",
    )
    wrapped = get_peft_model(base, config)
    with torch.no_grad():
        for name, layer in trained.items():
            target = wrapped.base_model.model.get_submodule(name)
            for part in ("lora_A", "lora_B"):
                getattr(target, part)["default"].weight.copy_(getattr(layer, part)["default"].weight)
    return wrapped


def own_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters held by the model itself, outside every submodule (e.g. `layer_weights`)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters(recurse=False)}


def save_adapter(model: nn.Module, folder: str | Path) -> Path:
    """Write `model`'s adapters and heads as a peft adapter folder, plus its own parameters
    (`layer_weights`) in OWN_PARAMETERS_FILE when it has any; read back with `load_adapter`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    adapter_model(model).save_pretrained(str(folder))
    own = own_parameters(model)
    if own:
        save_file(own, str(folder / OWN_PARAMETERS_FILE), metadata={"format": "pt"})
    return folder


def load_adapter(base: nn.Module, folder: str | Path):
    """`PeftModel.from_pretrained(base, folder)` with the folder's own parameters (`layer_weights`)
    loaded into `base` first; `base` is the model built for the same labels and layers."""
    from peft import PeftModel
    from safetensors.torch import load_file

    own = Path(folder) / OWN_PARAMETERS_FILE
    if own.is_file():
        with torch.no_grad():
            for name, tensor in load_file(str(own)).items():
                getattr(base, name).copy_(tensor)
    return PeftModel.from_pretrained(base, str(folder))


def export_ready(model):
    """What a run saves as its model: with LoRA adapters, a copy with them merged into the weights
    (a plain transformers model); without adapters, the model itself."""
    if not lora_layers(model):
        return model
    return replace_lora(copy.deepcopy(model), merge=True)
