"""The toolkit's own plug-in encoders (`model.name=encoder`): music encoders that are not transformers
checkpoints, written here against the plug-in interface (finetune/backbones/plugin.py) and listed by
name in `finetune.encoder_specs.PACKAGED`, beside the encoders installed packages register.

muq: MuQ (Zhu et al. 2025), its published architecture with torch and transformers only
(`backbone.encoder=muq`); its weights are converted from the Hub download by `python -m
finetune.encoders.muq convert`.
"""
