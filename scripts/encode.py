"""Rule encode: the clips' EnCodec codes, from the model's own compression model."""

import json
import logging
from pathlib import Path

from voice_train.rule import run_rule


def main():
    import torch

    from voice_train import compat, tokens
    from voice_train.precision import resolve_device

    torch.set_num_threads(snakemake.threads)
    compat.setup_audiocraft(snakemake.params.attention_backend)
    settings = snakemake.params.settings
    manifest = json.loads(Path(snakemake.input.manifest).read_text(encoding="utf-8"))
    codes, offsets, meta = tokens.encode_manifest(
        manifest,
        snakemake.params.model_ref,
        device=resolve_device(settings["device"], "encode.device"),
        batch_seconds=settings["batch_seconds"],
    )
    tokens.write_tokens(snakemake.output.tokens, codes, offsets, meta)
    logging.info(
        "%d clips, %d frames x %d codebooks at %.1f frames/s",
        len(meta["clips"]),
        codes.shape[1],
        codes.shape[0],
        meta["frame_rate"],
    )


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
