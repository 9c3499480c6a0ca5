"""Rule evaluate: how much the fine-tuned model sounds like her, on the test block (voice_eval.json)."""

import json
import logging
import shutil
from pathlib import Path

from voice_train.fsutil import write_json_atomic
from voice_train.rule import CONSOLE_LOGGER, run_rule


def main():
    from voice_train.eval_figures import WHAT_IT_DOES_NOT, headline, skipped_result
    from voice_train.evaluate import EvaluateSettings
    from voice_train.html import write_eval_listen_page

    voice = snakemake.wildcards.voice
    settings = EvaluateSettings.from_config(snakemake.params.settings, snakemake.params.sample)
    wav_dir = Path(snakemake.output.wavs)
    if not settings.enabled:
        result = skipped_result(voice)
        wav_dir.mkdir(parents=True, exist_ok=True)
    else:
        import torch

        from voice_train.evaluate import evaluate_voice

        torch.set_num_threads(snakemake.threads)
        shutil.rmtree(wav_dir, ignore_errors=True)
        result = evaluate_voice(
            voice=voice,
            checkpoint=snakemake.input.lm_checkpoint,
            base_model=snakemake.params.model_ref,
            model_name=snakemake.params.model,
            manifest=json.loads(Path(snakemake.input.manifest).read_text(encoding="utf-8")),
            status=json.loads(Path(snakemake.input.status).read_text(encoding="utf-8")),
            tokens_path=snakemake.input.tokens,
            description=snakemake.params.description,
            settings=settings,
            wav_dir=wav_dir,
            attention_backend=snakemake.params.attention_backend,
        )
    write_eval_listen_page(snakemake.output.listen, result, wav_dir)
    write_json_atomic(snakemake.output.evaluation, result)
    console = logging.getLogger(CONSOLE_LOGGER)
    console.info("evaluate %s: %s", voice, headline(result))
    if result.get("note"):
        console.info("evaluate %s: %s", voice, result["note"])
    if result.get("status") == "completed":
        console.info("evaluate %s: %s", voice, WHAT_IT_DOES_NOT)


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
