"""Rule train: fine-tune the LM on the token cache and export the checkpoint."""

import json
import logging

from voice_train.rule import run_rule


def main():
    import torch

    from voice_train.train import TrainSettings, train

    torch.set_num_threads(snakemake.threads)
    result = train(
        tokens_path=snakemake.input.tokens,
        model_name=snakemake.params.model_ref,
        settings=TrainSettings.from_config(snakemake.params.settings),
        checkpoint_path=snakemake.output.lm_checkpoint,
        status_path=snakemake.output.status,
        state_dir=f"{snakemake.config['paths']['state_dir']}/{snakemake.wildcards.voice}",
        voice=snakemake.wildcards.voice,
        attention_backend=snakemake.params.attention_backend,
        loss_plot_path=snakemake.output.loss_plot,
    )
    keys = ("base_val_loss", "best_val_loss", "best_step", "loss", "checkpoint_sha256")
    logging.info("done: %s", json.dumps({k: result.status.get(k) for k in keys}))


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
