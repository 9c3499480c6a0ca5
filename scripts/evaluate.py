"""Rule evaluate: how much the fine-tuned model's samples sound like the voice (voice_eval.json)."""

import json
import logging
from pathlib import Path

from voice_train.fsutil import write_json_atomic
from voice_train.rule import CONSOLE_LOGGER, run_rule


def main():
    from voice_train.evaluate import EvaluateSettings, evaluate_voice, headline, skipped_result

    voice = snakemake.wildcards.voice
    settings = EvaluateSettings.from_config(snakemake.params.settings, snakemake.params.sample)
    if not settings.enabled:
        result = skipped_result(voice)
    else:
        import torch

        torch.set_num_threads(snakemake.threads)
        result = evaluate_voice(
            voice=voice,
            checkpoint=snakemake.input.lm_checkpoint,
            base_model=snakemake.params.model_ref,
            model_name=snakemake.params.model,
            manifest=json.loads(Path(snakemake.input.manifest).read_text(encoding="utf-8")),
            status=json.loads(Path(snakemake.input.status).read_text(encoding="utf-8")),
            description=snakemake.params.description,
            settings=settings,
            attention_backend=snakemake.params.attention_backend,
        )
    write_json_atomic(snakemake.output.evaluation, result)
    console = logging.getLogger(CONSOLE_LOGGER)
    console.info("evaluate %s: %s", voice, headline(result))
    if result.get("note"):
        console.info("evaluate %s: %s", voice, result["note"])


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
