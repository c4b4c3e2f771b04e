"""MuQ (Zhu et al. 2025, "MuQ: Self-Supervised Music Representation Learning with Mel Residual Vector
Quantization", arXiv:2501.01108) as a plug-in encoder, written from its published architecture (the
`muq` package needs a torchaudio extension that does not load beside our torch).

What MuQ's embeddings are, in order: a waveform at 24 kHz -> power mel spectrogram (FFT and Hann
window of 2048, hop 240, centred with reflect padding, 128 HTK mel bands up to 12 kHz, no filter
normalisation) -> decibels (floor 1e-10) -> the last frame dropped -> standardised with the
pretraining set's mean and std -> two residual 3x3 convolution blocks with batch norm, each halving
bands and frames -> a Linear over channels x bands -> transformers' `Wav2Vec2ConformerEncoder`
(rotary positions, 31-tap depthwise convolution, swish). Its hidden states are the Conformer's
input (after dropout), each layer's output but the last, and the last through the final layer norm:
12 layers + 1 at 25 frames a second.

`muq_large` builds the released size (OpenMuQ/MuQ-large-msd-iter) with random weights; `convert`
maps that checkpoint's tensors to this module's names and writes the `.safetensors` file that
`backbone.encoder_weights` reads (`python -m finetune.encoders.muq convert <download> <out>`).
MuQ's weights are CC BY-NC 4.0: they come from the Hub only when the user downloads them.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import librosa
import torch
from torch import nn
from transformers import Wav2Vec2ConformerConfig
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

from finetune.encoder_specs import cause

SAMPLE_RATE = 24000
N_FFT = 2048
HOP = 240
N_MELS = 128
SUBSAMPLING = 4  # the two convolution blocks each halve the frames
DB_FLOOR = 1e-10  # power floor before decibels
# The released model's normalisation of the decibel mel (its config's stat, measured on its pretraining data).
MEL_MEAN = 6.768444971712967
MEL_STD = 18.417922652295623
# The Conformer of the released model (its config's w2v2_config); width and depth come from the factory.
CONFORMER = dict(
    hidden_act="swish",
    position_embeddings_type="rotary",
    rotary_embedding_base=10000,
    conv_depthwise_kernel_size=31,
    layer_norm_eps=1e-5,
    layerdrop=0.0,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.1,
    conformer_conv_dropout=0.1,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    max_source_positions=5000,
)

# The published checkpoint: MuQ's state dict, every name under "model.".
PUBLISHED_PREFIX = "model."
# Pretraining-only tensors in it, unused by the embeddings: the target head, the cls token, the target quantizers.
PRETRAINING_ONLY = ("linear.", "cls_token", "quantizer_", "rvq.", "recon_proj.")
# Older torch names for the (unused) positional convolution's weight norm.
WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")  # a Hub download, preferred first


class MelFrontEnd(nn.Module):
    """Waveform (B, T) at 24 kHz -> standardised decibel mel (B, 128, T // 240)."""

    def __init__(self):
        super().__init__()
        filters = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2, htk=True, norm=None
        )
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)

    def power_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """The power mel spectrogram (B, 128, 1 + T // 240), every frame."""
        spectrum = torch.stft(
            audio.float(), N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True
        )
        return self.filters @ spectrum.abs().square()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        decibels = 10 * torch.log10(self.power_mel(audio).clamp(min=DB_FLOOR))
        return (decibels[..., :-1] - MEL_MEAN) / MEL_STD


class ResidualConvBlock(nn.Module):
    """conv1 -> bn1 -> ReLU -> conv2 -> bn2, plus the strided shortcut conv3 -> bn3, then ReLU (3x3 kernels)."""

    def __init__(self, channels_in: int, channels_out: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.conv3 = nn.Conv2d(channels_in, channels_out, 3, padding=1, stride=stride)
        self.bn3 = nn.BatchNorm2d(channels_out)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        main = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(maps)))))
        return torch.relu(main + self.bn3(self.conv3(maps)))


class ConvSubsampling(nn.Module):
    """Mel (B, bands, T) -> (B, T / 4, width): two residual blocks halving bands and frames, then a
    Linear over each frame's channels x bands (channel-major)."""

    def __init__(self, channels: int, width: int, bands: int = N_MELS):
        super().__init__()
        self.conv = nn.Sequential(ResidualConvBlock(1, channels, (2, 2)), ResidualConvBlock(channels, channels, (2, 2)))
        self.linear = nn.Linear(channels * bands // SUBSAMPLING, width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        maps = self.conv(mel.unsqueeze(1))  # (B, channels, bands / 4, T / 4)
        return self.linear(maps.permute(0, 3, 1, 2).flatten(2))


class MuQEncoder(nn.Module):
    """MuQ: waveform (B, T) at 24 kHz -> every layer's hidden states (B, depth + 1, T / 960, width)."""

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE / HOP / SUBSAMPLING  # 25 frames a second

    def __init__(self, width: int, depth: int, heads: int, intermediate: int, conv_channels: int):
        super().__init__()
        config = Wav2Vec2ConformerConfig(
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            attn_implementation="sdpa",
            **CONFORMER,
        )
        self.num_layers = depth + 1
        self.mel = MelFrontEnd()
        self.conv = ConvSubsampling(conv_channels, width)
        self.conformer = Wav2Vec2ConformerEncoder(config)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        hidden = self.conformer.dropout(self.conv(self.mel(audio)))
        positions = self.conformer.embed_positions(hidden)
        states = []
        for layer in self.conformer.layers:
            states.append(hidden)
            hidden = layer(hidden, relative_position_embeddings=positions)
        states.append(self.conformer.layer_norm(hidden))
        return torch.stack(states, dim=1)


def muq_large() -> MuQEncoder:
    """The released size (OpenMuQ/MuQ-large-msd-iter, about 300 M weights): 12 Conformer layers of
    1024 (16 heads, feed-forward 4096) on 512-channel convolutions; random weights until
    backbone.encoder_weights reads the converted checkpoint."""
    return MuQEncoder(width=1024, depth=12, heads=16, intermediate=4096, conv_channels=512)


def muq_tiny() -> MuQEncoder:
    """The same architecture at a tiny size (2 layers of 32, 8 channels): for tests and dry runs."""
    return MuQEncoder(width=32, depth=2, heads=2, intermediate=64, conv_channels=8)


# ---------------------------------------------------------------------------- the published weights


def checkpoint_file(source: Path) -> Path:
    """The weights file of a download: the file itself, or the folder's model.safetensors, else pytorch_model.bin."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(2, "No such file or directory", str(source))
    found = [source / name for name in CHECKPOINT_FILES if (source / name).is_file()]
    if not found:
        raise ValueError(
            f"{source}: no {' or '.join(CHECKPOINT_FILES)} in it; download OpenMuQ/MuQ-large-msd-iter into it first"
        )
    return found[0]


def read_published(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: safetensors, or a PyTorch pickle read with weights_only=True
    (tensors and plain containers only: no code runs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({cause(err)})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def check_published_config(source: Path) -> None:
    """Refuse a download whose config.json (when there is one) front end differs from this module's."""
    path = source / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    stat = config.get("stat", {})
    found = {
        "hop_length": config.get("hop_length", HOP),
        "n_mels": config.get("n_mels", N_MELS),
        "melspec_2048_mean": stat.get("melspec_2048_mean", MEL_MEAN),
        "melspec_2048_std": stat.get("melspec_2048_std", MEL_STD),
    }
    expected = {"hop_length": HOP, "n_mels": N_MELS, "melspec_2048_mean": MEL_MEAN, "melspec_2048_std": MEL_STD}
    differing = [f"{key} {found[key]} (ours {value})" for key, value in expected.items() if found[key] != value]
    if differing:
        raise ValueError(f"{path}: another MuQ front end than finetune.encoders.muq builds: {', '.join(differing)}")


def our_name(published: str) -> str | None:
    """This module's name for a published tensor; None for one only pretraining used."""
    name = published.removeprefix(PUBLISHED_PREFIX)
    if name.startswith(PRETRAINING_ONLY):
        return None
    stem, _, last = name.rpartition(".")
    return f"{stem}.{WEIGHT_NORM_NAMES[last]}" if last in WEIGHT_NORM_NAMES else name


def load_published(encoder: MuQEncoder, published: dict[str, torch.Tensor], source: str) -> None:
    """Read the published tensors into `encoder` under its names; refused in one line unless every
    weight is there, with its shape, and nothing else is."""
    from finetune.backbones.plugin import mismatch

    state = {name: tensor for key, tensor in published.items() if (name := our_name(key)) is not None}
    ours = encoder.state_dict()
    shapes = [
        f"{name} {tuple(tensor.shape)} (ours {tuple(ours[name].shape)})"
        for name, tensor in sorted(state.items())
        if name in ours and tensor.shape != ours[name].shape
    ]
    if shapes:
        raise ValueError(
            f"{source}: does not fit {describe(encoder)}: {len(shapes)} weights of another shape "
            f"(e.g. {', '.join(shapes[:2])})"
        )
    loading = encoder.load_state_dict(state, strict=False)
    if loading.missing_keys or loading.unexpected_keys:
        raise ValueError(f"{source}: does not fit {describe(encoder)}: {mismatch(loading)}")


def describe(encoder: MuQEncoder) -> str:
    """The encoder's size in words."""
    return f"MuQ with {encoder.num_layers - 1} layers of {encoder.conformer.layer_norm.normalized_shape[0]}"


def convert(source: Path, out: Path, encoder: MuQEncoder | None = None) -> Path:
    """Write the published MuQ checkpoint at `source` (a Hub download folder or its weights file) as
    the `.safetensors` file `backbone.encoder_weights` reads into `encoder` (default: muq_large)."""
    from safetensors.torch import save_file

    from finetune.atomic import written_whole

    if out.suffix != ".safetensors":
        raise ValueError(
            f"{out}: the converted weights are written as .safetensors (what backbone.encoder_weights "
            "reads); name the file *.safetensors"
        )
    if source.is_dir():
        check_published_config(source)
    path = checkpoint_file(source)
    published = read_published(path)
    encoder = muq_large() if encoder is None else encoder
    load_published(encoder, published, str(path))
    with written_whole(out) as temporary:
        save_file({name: tensor.contiguous() for name, tensor in encoder.state_dict().items()}, str(temporary))
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune.encoders.muq convert SOURCE OUT`; a mistake prints one line and exits 2."""
    from finetune.cli import USER_ERRORS, error_line

    parser = argparse.ArgumentParser(
        prog="python -m finetune.encoders.muq",
        description="Convert the published MuQ weights for backbone.encoder_weights.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    converting = commands.add_parser("convert", help="a Hub download of OpenMuQ/MuQ-large-msd-iter -> .safetensors")
    converting.add_argument(
        "source",
        type=Path,
        help="the downloaded folder, or its model.safetensors / pytorch_model.bin (read with weights_only=True)",
    )
    converting.add_argument("out", type=Path, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    try:
        written = convert(args.source, args.out)
    except USER_ERRORS as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    print(f"{written}: backbone.encoder=muq backbone.encoder_weights={written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
