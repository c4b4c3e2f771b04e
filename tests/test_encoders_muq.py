"""MuQ as a packaged plug-in encoder (finetune/encoders/muq.py, issue 30): a tiny MuQ with random
weights meets the encoder interface offline, its mel front end is librosa's, the toolkit lists it
by name, the published checkpoint's names convert to weights `backbone.encoder_weights` reads (and
a checkpoint of another shape is refused in one line), and it trains as a probe and with LoRA."""

import contextlib
import io
import json

import librosa
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_helpers import run_main
from finetune.backbones.plugin import build_encoder
from finetune.cli import main
from finetune.encoder_specs import resolve_spec
from finetune.encoders import muq
from finetune.recipe import BackboneConfig, LoraConfig

TINY_SPEC = "finetune.encoders.muq:muq_tiny"
WIDTH, CHANNELS, INTERMEDIATE, HEAD_SIZE, DEPTH = 32, 8, 64, 16, 2  # muq_tiny's size
TINY = ["train.max_steps=2", "train.batch_size=4", "data.max_tracks=8", "data.num_workers=0", "eval.durations=null"]


def tone(seconds: float = 1.0, frequency: float = 440.0) -> np.ndarray:
    """A test tone at MuQ's 24 kHz, with a quieter octave."""
    t = np.arange(int(seconds * muq.SAMPLE_RATE)) / muq.SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t) + 0.1 * np.sin(4 * np.pi * frequency * t)).astype(np.float32)


# ---------------------------------------------------------------------------- the published checkpoint's names


def batch_norm(name: str, size: int) -> dict[str, tuple]:
    return {
        f"{name}.weight": (size,),
        f"{name}.bias": (size,),
        f"{name}.running_mean": (size,),
        f"{name}.running_var": (size,),
        f"{name}.num_batches_tracked": (),
    }


def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> dict[str, tuple]:
    return {f"{name}.weight": (fan_out, fan_in), **({f"{name}.bias": (fan_out,)} if bias else {})}


def layer_norm(name: str, size: int) -> dict[str, tuple]:
    return {f"{name}.weight": (size,), f"{name}.bias": (size,)}


def conformer_layer(prefix: str, width: int) -> dict[str, tuple]:
    """A Wav2Vec2ConformerEncoderLayer's tensors, as MuQ's checkpoint names them."""
    shapes = {}
    for ffn in ("ffn1", "ffn2"):
        shapes |= layer_norm(f"{prefix}.{ffn}_layer_norm", width)
        shapes |= linear(f"{prefix}.{ffn}.intermediate_dense", width, INTERMEDIATE)
        shapes |= linear(f"{prefix}.{ffn}.output_dense", INTERMEDIATE, width)
    shapes |= layer_norm(f"{prefix}.self_attn_layer_norm", width)
    for projection in ("linear_q", "linear_k", "linear_v", "linear_out"):
        shapes |= linear(f"{prefix}.self_attn.{projection}", width, width)
    conv = f"{prefix}.conv_module"
    shapes |= layer_norm(f"{conv}.layer_norm", width) | batch_norm(f"{conv}.batch_norm", width)
    shapes |= {
        f"{conv}.pointwise_conv1.weight": (2 * width, width, 1),
        f"{conv}.depthwise_conv.weight": (width, 1, 31),
        f"{conv}.pointwise_conv2.weight": (width, width, 1),
    }
    return shapes | layer_norm(f"{prefix}.final_layer_norm", width)


def published_shapes(width: int = WIDTH, depth: int = DEPTH) -> dict[str, tuple]:
    """Every tensor of a MuQ checkpoint (MuQ's state dict, under "model.") at the tiny size, with
    the pretraining-only ones (target head, cls token, quantizer) and the positional convolution's
    weight norm under its older torch names."""
    shapes = {}
    for block, channels_in in ((0, 1), (1, CHANNELS)):
        prefix = f"conv.conv.{block}"
        for conv, fan_in in (("conv1", channels_in), ("conv2", CHANNELS), ("conv3", channels_in)):
            shapes |= {f"{prefix}.{conv}.weight": (CHANNELS, fan_in, 3, 3), f"{prefix}.{conv}.bias": (CHANNELS,)}
        for norm in ("bn1", "bn2", "bn3"):
            shapes |= batch_norm(f"{prefix}.{norm}", CHANNELS)
    shapes |= linear("conv.linear", CHANNELS * muq.N_MELS // 4, width)
    shapes |= {
        "conformer.embed_positions.inv_freq": (HEAD_SIZE // 2,),
        "conformer.pos_conv_embed.conv.bias": (width,),
        "conformer.pos_conv_embed.conv.weight_g": (1, 1, 128),
        "conformer.pos_conv_embed.conv.weight_v": (width, width // 16, 128),
    }
    for index in range(depth):
        shapes |= conformer_layer(f"conformer.layers.{index}", width)
    shapes |= layer_norm("conformer.layer_norm", width)
    shapes |= linear("linear", width, 16) | {"cls_token": (width,)}
    shapes |= {
        "quantizer_melspec_2048.random_projection": (muq.N_MELS * 4, 16),
        "quantizer_melspec_2048.codebook": (16, 16),
    }
    return {f"model.{name}": shape for name, shape in shapes.items()}


def random_tensor(name: str, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """Random values for a tensor of the checkpoint (a batch norm's variance positive, its count whole)."""
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if name.endswith("running_var"):
        return torch.rand(shape, generator=generator) + 0.5
    return 0.2 * torch.randn(shape, generator=generator)


def published(width: int = WIDTH, depth: int = DEPTH) -> dict[str, torch.Tensor]:
    """Random tensors under the published names and shapes."""
    generator = torch.Generator().manual_seed(0)
    return {name: random_tensor(name, shape, generator) for name, shape in published_shapes(width, depth).items()}


def download(folder, tensors: dict, file: str = "model.safetensors"):
    """A folder laid out as a Hub download of OpenMuQ/MuQ-large-msd-iter (its config's front end)."""
    folder.mkdir()
    if file.endswith(".safetensors"):
        save_file(tensors, str(folder / file))
    else:
        torch.save(tensors, folder / file)
    stat = {"melspec_2048_mean": muq.MEL_MEAN, "melspec_2048_std": muq.MEL_STD}
    (folder / "config.json").write_text(json.dumps({"hop_length": 240, "n_mels": 128, "stat": stat}))
    return folder


# ---------------------------------------------------------------------------- the interface


def test_a_tiny_muq_meets_the_encoder_interface():
    encoder = muq.muq_tiny().eval()
    with torch.no_grad():
        hidden = encoder(torch.from_numpy(np.stack([tone(3.0), tone(3.0, 220.0)])))
    assert (encoder.sample_rate, encoder.frame_rate, encoder.num_layers) == (24000, 25.0, DEPTH + 1)
    assert hidden.shape == (2, DEPTH + 1, 3 * 25, WIDTH)  # 3 s at the declared 25 frames a second
    with torch.no_grad():  # index 0: the Conformer's input, the convolutions' projection of the mel
        assert torch.allclose(hidden[0, 0], encoder.conv(encoder.mel(torch.from_numpy(tone(3.0))[None]))[0], atol=1e-5)
    model = build_encoder(
        3, ["a", "b", "c"], False, BackboneConfig(encoder=TINY_SPEC, mode="probe"), LoraConfig()
    ).model
    assert (model.config.sample_rate, model.config.frame_rate, model.config.num_hidden_layers) == (24000, 25.0, DEPTH)


def test_the_mel_front_end_is_librosas_melspectrogram():
    audio = tone()
    expected = librosa.feature.melspectrogram(
        y=audio,
        sr=24000,
        n_fft=2048,
        hop_length=240,
        n_mels=128,
        power=2.0,
        htk=True,
        norm=None,
        center=True,
        pad_mode="reflect",
    )
    front_end = muq.MelFrontEnd()
    power = front_end.power_mel(torch.from_numpy(audio)[None])[0].numpy()
    assert power.shape == expected.shape == (128, 101)
    assert np.abs(power - expected).max() <= 1e-4 * expected.max()
    expected = expected[:, :-1]  # MuQ drops the last frame, then standardises the decibels
    standardised = front_end(torch.from_numpy(audio)[None])[0].numpy()
    heard = expected > 1e-8 * expected.max()  # within 80 dB of the peak: below, float32 rounding is all there is
    decibels = 10 * np.log10(expected[heard])
    assert np.abs(standardised[heard] - (decibels - muq.MEL_MEAN) / muq.MEL_STD).max() < 1e-4


def test_muq_is_listed_by_name_beside_installed_encoders(capsys):
    assert resolve_spec("muq") == "finetune.encoders.muq:muq_large"
    assert main(["models"]) == 0
    listed = capsys.readouterr().out.split("plug-in encoders")[1]
    assert "muq          finetune.encoders.muq:muq_large" in listed


# ---------------------------------------------------------------------------- converting the published weights


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
def test_the_published_names_convert_to_weights_the_encoder_reads(tmp_path, file):
    tensors = published()
    out = muq.convert(download(tmp_path / "download", tensors, file), tmp_path / "muq.safetensors", muq.muq_tiny())
    backbone = BackboneConfig(encoder=TINY_SPEC, encoder_weights=str(out), mode="probe")
    encoder = build_encoder(3, ["a", "b", "c"], False, backbone, LoraConfig()).model.encoder
    state = encoder.state_dict()
    for name in ("conformer.layers.1.self_attn.linear_q.weight", "conv.conv.1.bn3.running_var", "conv.linear.weight"):
        assert torch.equal(state[name], tensors[f"model.{name}"])
    assert torch.equal(
        state["conformer.pos_conv_embed.conv.parametrizations.weight.original0"],
        tensors["model.conformer.pos_conv_embed.conv.weight_g"],
    )
    assert not [name for name in load_file(str(out)) if "cls_token" in name or "quantizer" in name]


def test_a_checkpoint_of_another_size_is_refused_in_one_line(tmp_path):
    fewer = {name: t for name, t in published().items() if ".layers.1." not in name}
    with pytest.raises(
        ValueError,
        match=r"^\S+model.safetensors: does not fit MuQ with 2 layers of 32: 33 weights "
        r"missing \(e.g. conformer.layers.1.ffn1_layer_norm.weight, ",
    ):
        muq.convert(download(tmp_path / "fewer", fewer), tmp_path / "out.safetensors", muq.muq_tiny())
    with pytest.raises(
        ValueError,
        match=r"^\S+model.safetensors: does not fit MuQ with 2 layers of 32: \d+ weights of "
        r"another shape \(e.g. conformer.layer_norm.bias \(48,\) \(ours \(32,\)\)",
    ):
        muq.convert(download(tmp_path / "wider", published(width=48)), tmp_path / "out.safetensors", muq.muq_tiny())
    assert not (tmp_path / "out.safetensors").exists()


class Payload:
    """An object in a pickle: loading it would run code of the file's choosing."""


def test_a_pickle_is_read_as_tensors_only(tmp_path):
    folder = download(tmp_path / "download", {**published(), "model.extra": Payload()}, "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin: not a readable checkpoint \(UnpicklingError: "):
        muq.convert(folder, tmp_path / "out.safetensors", muq.muq_tiny())


def test_the_convert_command_refuses_in_one_line_before_writing(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, message in (
        (
            [tmp_path / "empty", tmp_path / "out.safetensors"],
            f"error: {tmp_path / 'empty'}: no model.safetensors or pytorch_model.bin in it; download "
            "OpenMuQ/MuQ-large-msd-iter into it first",
        ),
        (
            [tmp_path / "empty", tmp_path / "out.pt"],
            f"error: {tmp_path / 'out.pt'}: the converted weights are written as .safetensors",
        ),
    ):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert muq.main(["convert", *map(str, args)]) == 2
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---------------------------------------------------------------------------- training


def test_lora_adapts_the_attention_projections_the_recipe_names():
    lora = LoraConfig(target_modules=["linear_q", "linear_k", "linear_v", "linear_out"])
    model = build_encoder(3, ["a", "b", "c"], False, BackboneConfig(encoder=TINY_SPEC, mode="lora"), lora).model
    adapted = sorted(name.split(".lora_A")[0] for name, p in model.named_parameters() if "lora_A" in name)
    assert adapted == [
        f"encoder.conformer.layers.{i}.self_attn.{projection}"
        for i in range(DEPTH)
        for projection in ("linear_k", "linear_out", "linear_q", "linear_v")
    ]


def train(tmp_path, root, mode: str, *extra: str) -> dict:
    out = tmp_path / "run"
    code, _, _ = run_main(
        [
            "--recipe",
            "demo",
            "model.name=encoder",
            f"backbone.encoder={TINY_SPEC}",
            f"backbone.mode={mode}",
            f"data.root={root}",
            f"output_dir={out}",
            *TINY,
            *extra,
        ]
    )
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_a_probe_of_every_layer_of_the_converted_weights(tmp_path, synthetic_root):
    weights = muq.convert(download(tmp_path / "download", published()), tmp_path / "muq.safetensors", muq.muq_tiny())
    metrics = train(tmp_path, synthetic_root, "probe", "probe.layers=all", f"backbone.encoder_weights={weights}")
    assert set(metrics["validation"]["probe_layer_scores"]) == {"0", "1", "2"}


@pytest.mark.slow
def test_lora_on_the_conformer_attention(tmp_path, synthetic_root):
    metrics = train(
        tmp_path,
        synthetic_root,
        "lora",
        "backbone.layer=weighted",
        "lora.target_modules=[linear_q,linear_k,linear_v,linear_out]",
    )
    assert 0 <= metrics["test"]["accuracy"] <= 1


@pytest.mark.slow
def test_the_mtat_lora_recipe_trains_a_tiny_muq(tmp_path, mtat_root):
    """The packaged recipe as it is (LoRA on the attention, layer mix, head fitted by a probe first),
    on a tiny MuQ with random weights."""
    code, _, _ = run_main(
        [
            "--recipe",
            "muq_mtat_lora",
            f"backbone.encoder={TINY_SPEC}",
            "backbone.encoder_weights=null",
            f"data.root={mtat_root}",
            "data.tags=7",
            "data.clip_seconds=3.0",
            f"output_dir={tmp_path / 'run'}",
            *TINY,
        ]
    )
    assert code == 0
    assert "roc_auc_macro" in json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
