"""Rule report: write the COLAB TRAIN REPORT block from the files on disk."""

from pathlib import Path

from voice_train.html import write_summary_page
from voice_train.report import VoiceFiles, build_report, write_report
from voice_train.rule import run_rule


def main():
    voices = [VoiceFiles(**v) for v in snakemake.params.voices]
    block = build_report(voices, Path.cwd())
    write_report(snakemake.output.report, block)
    write_summary_page(
        snakemake.output.summary, [(v.voice, v.manifest, v.status, v.evaluation) for v in voices], block
    )


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
