"""Rule demo_source: synthesise the demo's deterministic voice-like recording."""

from voice_train.demo import write_demo_flac
from voice_train.rule import run_rule


def main():
    demo = snakemake.params.demo
    write_demo_flac(
        snakemake.output.flac,
        duration_s=demo["duration_s"],
        sample_rate=demo["sample_rate"],
        channels=demo["channels"],
        seed=demo["seed"],
    )


run_rule(snakemake.log[0], main, outputs=list(snakemake.output))
