"""Plug-in encoders (`model.name=encoder`, issue 30): a tiny encoder written in tests/plugin_encoders.py
trains as probe, LoRA and full through the demo, is compared by `compare --vary`, exported and
loaded back; a HEAR module (tests/plugin_hear.py) runs as a probe; a broken encoder is refused in
one line; an installed package registers encoders by entry point."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_helpers import run_main
from finetune.backbones.plugin import build_encoder, requirement
from finetune.cli import main
from finetune.models import load_model
from finetune.predict import Predictor
from finetune.probe import model_key
from finetune.recipe import BackboneConfig, LoraConfig
from plugin_encoders import TinyEncoder
from test_refusals import refusal

TESTS = Path(__file__).resolve().parent
TINY = ["train.max_steps=2", "train.batch_size=4", "data.max_tracks=8", "data.num_workers=0", "eval.durations=null"]
ENCODER = ["model.name=encoder", "backbone.encoder=plugin_encoders:tiny"]
LABELS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def tests_importable(monkeypatch):
    """The test folder's encoder modules importable here and in any process a command starts."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def build(spec: str, mode: str = "probe", **backbone):
    return build_encoder(len(LABELS), LABELS, False, BackboneConfig(encoder=spec, mode=mode, **backbone), LoraConfig())


def installed(tmp_path: Path, monkeypatch, name: str, entry_points: str = "", top_level: str = "") -> None:
    """A distribution `name` 1.2.3 installed on sys.path as a bare *.dist-info folder (no pip)."""
    info = tmp_path / "site" / f"{name.replace('-', '_')}-1.2.3.dist-info"  # as a wheel names it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "top_level.txt").write_text(top_level)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "spec, message",
    [
        ("plugin_encoders:wrong_rank", "returned shape (2, 40, 8) for a batch of 2; an encoder returns (B, L, T', D)"),
        ("plugin_encoders:nan_output", "returned NaN or infinite hidden states"),
        ("plugin_encoders:other_rate", "at its sample_rate 16000 Hz gave 73 more frames, its frame_rate 100 says 100"),
        (
            "plugin_encoders:raises",
            "its forward on a (2, 16000) waveform batch at 16000 Hz raised RuntimeError: expected a (B, 1, T) input",
        ),
        ("plugin_encoders:no_attributes", "the encoder has no sample_rate, frame_rate, num_layers"),
        ("plugin_encoders:absent", "plugin_encoders has no callable 'absent'"),
        ("no_such_package.encoders:tiny", "cannot import no_such_package.encoders (ModuleNotFoundError"),
        ("hear:plugin_encoders", "plugin_encoders is not a HEAR module: it has no load_model"),
        ("plugin_encoders", "not package.module:factory, hear:package.module or a registered encoder"),
    ],
)
def test_a_broken_encoder_is_refused_in_one_line_naming_it(spec, message):
    with pytest.raises(ValueError) as raised:
        build(spec)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"backbone.encoder={spec}: ") and message in line, line


def test_a_hear_module_is_refused_for_training():
    with pytest.raises(
        ValueError,
        match=r"^backbone.mode=lora: backbone.encoder=hear:plugin_hear is a HEAR "
        r"module, a frozen encoder .* use backbone.mode=probe$",
    ):
        build("hear:plugin_hear", mode="lora")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    weights = tmp_path / "other.safetensors"
    save_file({"embed.weight": torch.zeros(8, 400)}, str(weights))
    with pytest.raises(
        ValueError,
        match=r"encoder_weights=.*other.safetensors: does not fit plugin_encoders:tiny: "
        r"5 weights missing \(e.g. embed.bias, layers.0.0.weight, layers.0.0.bias\)$",
    ):
        build("plugin_encoders:tiny", encoder_weights=str(weights))


@pytest.mark.slow
def test_the_command_refuses_a_broken_encoder_before_training(tmp_path, synthetic_root):
    line = refusal(
        tmp_path,
        "--recipe",
        "demo",
        "model.name=encoder",
        "backbone.encoder=plugin_encoders:nan_output",
        f"data.root={synthetic_root}",
        *TINY,
    )
    assert line == (
        "error: backbone.encoder=plugin_encoders:nan_output: returned NaN or infinite hidden states for 1 s of noise"
    )


# ---------------------------------------------------------------------------- building, keys, registry


def test_lora_adapts_the_linear_layers_the_encoder_calls():
    model = build("plugin_encoders:tiny", mode="lora").model
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert [n for n in trainable if "lora_A" in n] == [
        "encoder.embed.lora_A.default.weight",
        "encoder.layers.0.0.lora_A.default.weight",
        "encoder.layers.1.0.lora_A.default.weight",
    ]
    assert "classifier.weight" in trainable and not [n for n in trainable if n.endswith("base_layer.weight")]


def test_two_encoders_with_the_same_weights_never_share_cached_embeddings(tmp_path):
    weights = tmp_path / "tiny.safetensors"
    save_file(TinyEncoder().state_dict(), str(weights))
    one, two = (build(spec, encoder_weights=str(weights)) for spec in ("plugin_encoders:tiny", "plugin_encoders:other"))
    assert torch.equal(one.model.encoder.embed.weight, two.model.encoder.embed.weight)
    keys = [model_key(b.model, b.feature_extractor, "encoder").split("-")[-1] for b in (one, two)]
    assert keys[0] != keys[1]


def test_an_installed_package_registers_its_encoders_and_the_model_records_it(tmp_path, monkeypatch, capsys):
    installed(
        tmp_path,
        monkeypatch,
        "tiny-encoders",
        "[finetune.encoders]\ntiny-music = plugin_encoders:tiny\n",
        "plugin_encoders\n",
    )
    assert main(["models"]) == 0
    assert "tiny-music" in capsys.readouterr().out.split("plug-in encoders")[1]
    config = build("tiny-music").model.config
    assert (config.encoder, config.encoder_package, config.encoder_version) == (
        "plugin_encoders:tiny",
        "tiny-encoders",
        "1.2.3",
    )
    assert "`pip install tiny-encoders==1.2.3`" in requirement(config.to_dict())


# ---------------------------------------------------------------------------- runs


def train(out: Path, root: Path, mode: str, *extra: str) -> Path:
    code, _, _ = run_main(
        ["--recipe", "demo", *ENCODER, f"backbone.mode={mode}", f"data.root={root}", f"output_dir={out}", *TINY, *extra]
    )
    assert code == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, extra",
    [("probe", ["probe.layers=all"]), ("lora", ["backbone.layer=weighted"]), ("full", ["backbone.pooling=attention"])],
)
def test_trains_in_every_mode_and_exports_a_model_that_loads_back(tmp_path, synthetic_root, mode, extra):
    run_dir = train(tmp_path / "run", synthetic_root, mode, *extra)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1
    if mode == "probe":
        assert set(metrics["validation"]["probe_layer_scores"]) == {"0", "1", "2"}
    assert not [k for k in load_file(str(run_dir / "model" / "model.safetensors")) if "lora" in k]
    assert main(["export", str(run_dir), "--to", str(tmp_path / "export")]) == 0
    loaded = load_model(tmp_path / "export")
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    assert type(loaded.model).__name__ == "EncoderForAudioClassification" and loaded.sample_rate == 16000
    assert all(torch.equal(loaded.model.state_dict()[name], tensor) for name, tensor in saved.items())
    track = next(synthetic_root.rglob("*.wav"))
    assert Predictor.from_pretrained(tmp_path / "export").predict(str(track))
    card = (tmp_path / "export" / "README.md").read_text()
    assert "Its encoder is built by `plugin_encoders:tiny` (backbone.encoder)" in card  # what loading it needs


@pytest.mark.slow
def test_a_hear_module_runs_as_a_probe(tmp_path, synthetic_root):
    code, _, log = run_main(
        [
            "--recipe",
            "demo",
            "model.name=encoder",
            "backbone.encoder=hear:plugin_hear",
            "backbone.mode=probe",
            f"data.root={synthetic_root}",
            f"output_dir={tmp_path / 'run'}",
            *TINY,
        ]
    )
    assert code == 0 and "hear_plugin_hear-" in log
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]["probe_layer"] == 0
    assert load_model(tmp_path / "run" / "model").model.config.encoder == "hear:plugin_hear"
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert requirement(config) == (
        "Its encoder is built by `hear:plugin_hear` (backbone.encoder): loading this "
        "model needs its module on the Python path."
    )


@pytest.mark.slow
def test_compare_vary_probe_against_lora(tmp_path, synthetic_root):
    out = tmp_path / "vary"
    code, _, _ = run_main(
        [
            "compare",
            "--recipe",
            "demo",
            "--vary",
            "backbone.mode=probe,lora",
            "--out",
            str(out),
            *ENCODER,
            f"data.root={synthetic_root}",
            *TINY,
        ]
    )
    assert code == 0
    summary = json.loads((out / "vary.json").read_text())
    assert [v["value"] for v in summary["values"]] == ["probe", "lora"]
    assert "| lora |" in (out / "vary.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["1", "weighted"])
def test_the_probe_head_init_fits_the_layer_the_head_reads(tmp_path, synthetic_root, layer):
    """Linear probe then fine-tune: the start point the Trainer evaluates scores what the probe
    fitted, so the head was fitted on the layer (or mix) the model reads."""
    code, _, log = run_main(
        [
            "--recipe",
            "demo",
            *ENCODER,
            "backbone.mode=full",
            f"backbone.layer={layer}",
            "backbone.head_init=probe",
            f"data.root={synthetic_root}",
            f"output_dir={tmp_path / 'run'}",
            *TINY,
        ]
    )
    assert code == 0
    fitted = float(log.split("backbone.head_init=probe: head fitted")[1].split("validation loss ")[1].split()[0])
    start = json.loads((tmp_path / "run" / "start_point" / "metrics.json").read_text())
    assert start["eval_loss"] == pytest.approx(fitted, abs=1e-3)


@pytest.mark.slow
def test_the_bench_case_times_the_plugin_against_the_bare_module():
    from bench import plugin

    step, embedding = plugin.run(quick=True)
    assert (step.bench, embedding.bench) == ("plugin", "plugin")
    assert step.case.startswith("training step") and embedding.case.startswith("frozen embedding pass")
    assert min(step.toolkit, step.bare, embedding.toolkit, embedding.bare) > 0


def test_an_encoder_model_without_its_encoder_is_refused_with_the_recipe(tmp_path):
    from finetune import recipe as recipes

    with pytest.raises(recipes.RecipeError, match=r"^backbone.encoder: model.name=encoder builds the encoder it names"):
        recipes.load("demo", ["model.name=encoder"])


def test_plugin_keys_belong_to_the_encoder_model_which_has_no_layers_to_decay():
    from finetune import recipe as recipes
    from finetune.checks import check_model_args

    for key in ("backbone.encoder=plugin_encoders:tiny", "backbone.encoder_weights=w.safetensors"):
        with pytest.raises(
            recipes.RecipeError,
            match=r"only model.name=encoder builds a plug-in encoder; "
            r"model 'simple_cnn' would ignore it",
        ):
            check_model_args(recipes.load("demo", [key]))
    decayed = recipes.load(
        "demo",
        ["model.name=encoder", "model.args={}", "backbone.encoder=plugin_encoders:tiny", "train.layer_decay=0.8"],
    )
    with pytest.raises(recipes.RecipeError, match="train.layer_decay: a plug-in encoder has no layer list"):
        check_model_args(decayed)


def test_an_encoder_that_cannot_be_found_is_refused_with_the_recipe_checks():
    """Found by its spec alone (no import of it, no torch), before any data is generated or indexed."""
    from finetune import recipe as recipes
    from finetune.checks import check_model_args

    for spec, module in (
        ("no_such_package.encoders:build", "no_such_package.encoders"),
        ("hear:no_such_hear_module", "no_such_hear_module"),
        ("json:no_such", None),
    ):
        recipe = recipes.load("demo", ["model.name=encoder", "model.args={}", f"backbone.encoder={spec}"])
        if module is None:  # the module exists: its factory is looked up when the encoder is built
            check_model_args(recipe)
            continue
        with pytest.raises(ValueError, match=rf"^backbone.encoder={spec}: cannot import {module} \("):
            check_model_args(recipe)


def test_encoder_weights_that_are_missing_or_a_pickle_are_refused_with_the_recipe_checks(tmp_path):
    from finetune import recipe as recipes
    from finetune.checks import check_model_args

    def checked(weights):
        check_model_args(
            recipes.load(
                "demo",
                [
                    "model.name=encoder",
                    "model.args={}",
                    "backbone.encoder=plugin_encoders:tiny",
                    f"backbone.encoder_weights={weights}",
                ],
            )
        )

    with pytest.raises(
        ValueError,
        match=r"encoder_weights=.*muq_large.safetensors: no such file; convert the "
        r"published weights first",
    ):
        checked(tmp_path / "muq_large.safetensors")
    pickle = tmp_path / "weights.bin"
    pickle.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"weights.bin: not a .safetensors file \(only safetensors"):
        checked(pickle)
