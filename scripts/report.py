"""Rule report: write the COLAB TRAIN REPORT block from the files on disk."""

from pathlib import Path

from voice_train.report import VoiceFiles, build_report, write_report
from voice_train.rule import run_rule


def main():
    voices = [VoiceFiles(**v) for v in snakemake.params.voices]
    write_report(snakemake.output.report, build_report(voices, Path.cwd()))


run_rule(snakemake.log[0], main)
