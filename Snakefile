# voice-train: one long voice recording (FLAC) -> a fine-tuned MusicGen model.
#
#   snakemake --cores all                                # the real job (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml  # the embedded demo
#
# Pipeline: [demo_source] -> preflight -> prepare -> encode -> train -> sample -> evaluate -> report
#           ([model] builds a random-init preset such as 'tiny' for the demo)
from snakemake.utils import min_version

min_version("9.0")

# A --configfile replaces the default config as a whole (Snakemake would merge the voice maps).
# The default is found beside this Snakefile, also with --directory elsewhere (e.g. on Drive).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/preflight.smk"
include: "rules/prepare.smk"
include: "rules/model.smk"
include: "rules/encode.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        config["paths"]["report"],
        [path for voice in VOICES for path in voice_outputs(voice)],


onsuccess:
    print_report()


onerror:
    report_failure(log)
