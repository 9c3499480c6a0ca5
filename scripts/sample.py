"""Rule sample: a text-conditioned WAV and a continuation WAV from the fine-tuned model."""

import json
from pathlib import Path

from voice_train.html import write_listen_page
from voice_train.rule import run_rule


def main():
    import torch

    from voice_train.sample import SampleSettings, generate_samples

    torch.set_num_threads(snakemake.threads)
    status = json.loads(Path(snakemake.input.status).read_text(encoding="utf-8"))
    generate_samples(
        checkpoint=snakemake.input.lm_checkpoint,
        base_model=snakemake.params.model_ref,
        manifest=json.loads(Path(snakemake.input.manifest).read_text(encoding="utf-8")),
        description=snakemake.params.description,
        settings=SampleSettings.from_config(snakemake.params.settings),
        text_wav=snakemake.output.text,
        continuation_wav=snakemake.output.continuation,
        attention_backend=snakemake.params.attention_backend,
        expect_sha256=status["checkpoint_sha256"],
    )
    write_listen_page(
        snakemake.output.listen,
        snakemake.wildcards.voice,
        snakemake.params.description,
        [
            ("Text-conditioned sample", snakemake.output.text),
            ("Continuation of a validation clip's first seconds", snakemake.output.continuation),
        ],
    )


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
