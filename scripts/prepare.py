"""Rule prepare: cut the checked recording into clips and write the dataset manifest."""

import json
import logging
from pathlib import Path

from voice_train.prepare import PrepareSettings, prepare_dataset
from voice_train.rule import run_rule
from voice_train.speakers import SpeakerSettings


def main():
    marker = json.loads(Path(snakemake.input.marker).read_text(encoding="utf-8"))
    manifest = prepare_dataset(
        source=snakemake.params.source,
        marker=marker,
        voice=snakemake.wildcards.voice,
        description=snakemake.params.description,
        dataset_dir=Path(snakemake.output.manifest).parent,
        settings=PrepareSettings.from_config(snakemake.params.settings),
        threads=snakemake.threads,
        speakers=SpeakerSettings(**snakemake.params.speakers),
        # Local scratch, never the dataset's disk (Google Drive on Colab); not a param: a path
        # does not change the clips.
        scratch_dir=snakemake.config["paths"].get("scratch_dir") or None,
    )
    logging.info("%d clips: %s", manifest["count"], json.dumps(manifest["summary"]))


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
