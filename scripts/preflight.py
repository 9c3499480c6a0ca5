"""Rule preflight: check the source recording; write the marker only if every check passes."""

import logging

from voice_train.fsutil import write_json_atomic
from voice_train.preflight import PreflightSettings, run_preflight
from voice_train.rule import CONSOLE_LOGGER, run_rule


def main():
    settings = PreflightSettings(**snakemake.params.settings)
    marker = run_preflight(snakemake.params.source, settings, threads=snakemake.threads)
    marker["voice"] = snakemake.wildcards.voice
    write_json_atomic(snakemake.output.marker, marker)
    for warning in marker["warnings"]:  # also in the marker, the log and the report's block
        logging.getLogger(CONSOLE_LOGGER).warning("preflight %s: %s", snakemake.wildcards.voice, warning)


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
