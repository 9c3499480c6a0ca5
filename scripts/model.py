"""Rule model: build a random-init preset (e.g. 'tiny') as an audiocraft pretrained directory."""

import logging

from voice_train.rule import run_rule


def main():
    import torch

    from voice_train import compat, presets

    torch.set_num_threads(snakemake.threads)
    compat.setup_audiocraft("torch")
    presets.build_random_pretrained(snakemake.wildcards.preset, snakemake.output[0], snakemake.params.seed)
    logging.info(
        "built %s (seed %d) in %s", snakemake.wildcards.preset, snakemake.params.seed, snakemake.output[0]
    )


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
